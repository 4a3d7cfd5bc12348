"""GPU correctness checks for the encoder, run on a CUDA machine (CI has none): prints each check
and exits non-zero if one fails.

1. precision: the default CUDA path (a float16 model, traced into one graph), the same run eagerly,
   and bfloat16 autocast against float32 on CPU;
2. replicas: two forward threads, each on its own CUDA stream, give the same vectors as one thread;
3. out of memory: with the process capped to a small share of GPU memory, a batch that does not fit
   raises torch's real ``OutOfMemoryError``, and the forward step splits it until every document
   has its vector, equal to the unsplit float32 result.

    python scripts/gpu_check.py /path/to/model [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading

import numpy as np
import torch

from loadgen.corpus import sample_corpus
from worker.batch.policy import Cut, FlushReason, padded_cost
from worker.batch.waiting import Batch
from worker.config import ModelSettings
from worker.consume.decode import Document, Source
from worker.encode.base import is_out_of_memory
from worker.encode.forward import forward
from worker.encode.transformer import TransformerEncoder


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def encode_all(encoder, ids: list[list[int]], size: int = 64) -> np.ndarray:
    return np.concatenate([encoder.encode(ids[i : i + size]) for i in range(0, len(ids), size)])


def check_precision(model: str, ids: list[list[int]], reference: np.ndarray) -> dict:
    out = {}
    for label, settings in {
        "auto (float16 model)": ModelSettings(name=model, device="cuda"),
        "auto, eager (EMBED_MODEL__TRACE=off)": ModelSettings(
            name=model, device="cuda", trace="off"
        ),
        "bfloat16 model": ModelSettings(name=model, device="cuda", dtype="bfloat16"),
        "bfloat16 autocast": ModelSettings(
            name=model, device="cuda", dtype="bfloat16", autocast=True
        ),
        "float16 autocast": ModelSettings(
            name=model, device="cuda", dtype="float16", autocast=True
        ),
        "float32 cuda": ModelSettings(name=model, device="cuda", dtype="float32"),
    }.items():
        encoder = TransformerEncoder(settings)
        cos = cosine(encode_all(encoder, ids), reference)
        out[label] = {
            "cosine_mean": round(float(cos.mean()), 6),
            "cosine_min": round(float(cos.min()), 6),
            "traced": encoder.traced,
        }
    return out


def check_replicas(encoder: TransformerEncoder, ids: list[list[int]]) -> float:
    """Largest difference between vectors from two concurrent stream-bound threads and one thread."""
    single = encode_all(encoder, ids)
    halves = [ids[: len(ids) // 2], ids[len(ids) // 2 :]]
    results: list[np.ndarray | None] = [None, None]

    def run(i: int) -> None:
        encoder.bind_thread()
        results[i] = encode_all(encoder, halves[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first, second = results
    if first is None or second is None:
        raise RuntimeError("a replica thread failed: its traceback is above")
    return float(np.abs(np.concatenate([first, second]) - single).max())


def check_out_of_memory(model: str, ids: list[list[int]]) -> dict:
    encoder = TransformerEncoder(ModelSettings(name=model, device="cuda", dtype="float32"))
    expected = encode_all(encoder, ids, size=8)
    big = [ids[i % len(ids)] for i in range(4096)]  # 4,096 full-length documents in one batch
    torch.cuda.empty_cache()
    free = torch.cuda.mem_get_info()[1]
    torch.cuda.set_per_process_memory_fraction(
        min(1.0, (torch.cuda.memory_allocated() + 2 * 2**30) / free)
    )
    try:
        try:
            encoder.encode(big)
            raised = None
        except Exception as exc:  # expected: torch.cuda.OutOfMemoryError
            raised = exc
        docs = [
            Document(str(i), "", "upsert", None, Source("t", 0, i, 0), "", token_ids=big[i])
            for i in range(len(big))
        ]
        lengths = [len(t) for t in big]
        cut = Cut(tuple(range(len(big))), FlushReason.TOKENS, sum(lengths), padded_cost(lengths))
        encoded = forward(encoder, Batch(docs, cut, 0.0))
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    vectors = np.zeros((len(big), expected.shape[1]), np.float32)
    for part_docs, part in encoded.parts:
        for d, v in zip(part_docs, part):
            vectors[int(d.id)] = v
    diff = float(
        np.abs(vectors - np.stack([expected[i % len(ids)] for i in range(len(big))])).max()
    )
    return {
        "raised": type(raised).__name__ if raised else None,
        "is_out_of_memory": bool(raised and is_out_of_memory(raised)),
        "splits": encoded.oom_splits,
        "parts": len(encoded.parts),
        "failed": len(encoded.failed),
        "vectors": len(encoded.docs),
        "max_abs_diff_vs_unsplit": diff,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--docs", type=int, default=512)
    parser.add_argument("--out")
    ns = parser.parse_args()
    texts = [d["text"] for d in sample_corpus(ns.docs)]
    cpu = TransformerEncoder(ModelSettings(name=ns.model, device="cpu", dtype="float32"))
    ids = cpu.tokenize(texts)
    reference = encode_all(cpu, ids)
    result = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "model": ns.model,
        "docs": len(ids),
    }
    result["precision_vs_cpu_float32"] = check_precision(ns.model, ids, reference)
    result["replicas_max_abs_diff"] = check_replicas(
        TransformerEncoder(ModelSettings(name=ns.model, device="cuda")), ids
    )
    long_ids = sorted(ids, key=len)[-64:]
    result["out_of_memory"] = check_out_of_memory(ns.model, long_ids)
    print(json.dumps(result, indent=2))
    if ns.out:
        with open(ns.out, "w") as f:
            json.dump(result, f, indent=2)
    oom = result["out_of_memory"]
    failures = [
        name
        for name, ok in {
            "float16 cosine >= 0.999": result["precision_vs_cpu_float32"]["auto (float16 model)"][
                "cosine_min"
            ]
            >= 0.999,
            "replicas equal to one thread": result["replicas_max_abs_diff"] < 1e-2,
            "a real out-of-memory error": oom["is_out_of_memory"],
            "every document recovered": oom["vectors"] == 4096 and oom["failed"] == 0,
            "split vectors equal unsplit": oom["max_abs_diff_vs_unsplit"] < 1e-3,
        }.items()
        if not ok
    ]
    print("FAILED: " + ", ".join(failures) if failures else "all GPU checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
