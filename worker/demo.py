"""The main job on the embedded default, end to end, with the real commands.

Starts the local stack, publishes the sample corpus with ``embed-loadgen``, runs one
``embed-worker run`` until the topic is drained, checks that every document came out as a vector,
prints documents/s and tokens/s, and answers one nearest-neighbour query over the vectors.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from worker.config import KafkaSettings, ModelSettings
from worker.publish.codec import decode_output
from worker.stack.devstack import LocalRun


def _step(text: str) -> None:
    print(f"==> {text}", flush=True)


def run_demo(*, docs: int, state_dir: str, query: str, baseline: bool = False) -> int:
    from loadgen.corpus import sample_corpus
    from loadgen.readback import committed_offsets, read_topic

    _step(f"starting the local stack (broker + Redis) in {state_dir}")
    run = LocalRun.start("demo", state_dir)
    with tempfile.TemporaryDirectory() as tmp:
        pub_file = Path(tmp, "publish.json")
        _step(f"publishing {docs} documents of the sample corpus with embed-loadgen")
        subprocess.run([sys.executable, "-m", "loadgen", "publish", "--count", str(docs), "--summary-file", str(pub_file)], env=run.env(), check=True)
        publish_report = json.loads(pub_file.read_text())
    published = publish_report["messages"]
    _step("running one embed-worker until the topic is drained (--exit-when-idle 3)")
    summary = run.run_worker(idle_s=3)

    kafka = KafkaSettings(bootstrap_servers=run.addresses.kafka)
    outputs = [decode_output(r.value) for r in read_topic(kafka, run.output_topic, expect=published)]
    vectors = {o["id"]: o["vector"] for o in outputs if o["op"] == "upsert"}
    print(
        f"\n{published} documents in, {len(vectors)} vectors out, {summary['dead_lettered']} dead-lettered\n"
        f"worker: {summary['docs_per_s']:,.1f} documents/s, {summary['tokens_per_s']:,.0f} tokens/s "
        f"({summary['batches']} batches, padding efficiency {summary['padding_efficiency']})"
    )
    ends = {int(p): off for p, off in publish_report["end_offsets"].items()}
    committed = committed_offsets(kafka, run.name, run.input_topic, sorted(ends))
    print(f"committed offsets {'equal' if committed == ends else 'DIFFER FROM'} the topic's end offsets: {committed}")
    corpus = sample_corpus(docs)
    if baseline:
        _baseline(corpus, vectors, summary["docs_per_s"])
    if vectors:
        _nearest(query, vectors, {d["id"]: d["text"] for d in corpus})
    print(f"\nThe stack keeps running for you to explore; stop it with: embed-worker devstack down --dir {state_dir}")
    return 0 if len(vectors) == published and committed == ends else 1


def _baseline(corpus: list[dict], vectors: dict[str, np.ndarray], worker_docs_per_s: float, batch_size: int = 32) -> None:
    """sentence-transformers ``encode()`` on the same documents and model, in this process: its speed,
    and how close the worker's vectors are to its own."""
    texts = [d["text"] for d in corpus]
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        print("\n(baseline skipped: sentence-transformers is not installed; pip install 'embedfleet[test]')")
        return
    from worker.encode.transformer import resolve_model_path

    model = SentenceTransformer(resolve_model_path(ModelSettings().name), device="cpu")
    model.encode(texts[:64], batch_size=batch_size)  # warm-up, as the worker's first batch is
    started = time.monotonic()
    reference = model.encode(texts, batch_size=batch_size)
    rate = len(texts) / (time.monotonic() - started)
    ours = np.stack([vectors[d["id"]] for d in corpus if d["id"] in vectors])
    ref = np.stack([r for d, r in zip(corpus, reference) if d["id"] in vectors])
    cos = (ours * ref).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    print(f"worker vectors vs sentence-transformers: lowest cosine {cos.min():.5f} over {len(cos)} documents")
    print(
        f"sentence-transformers encode(batch_size={batch_size}) on the same {len(texts)} documents: {rate:,.1f} documents/s; "
        f"worker (Kafka in, Redis dedup, vectors published and committed) / encode(): {worker_docs_per_s / rate:.2f}x"
    )


def _nearest(query: str, vectors: dict[str, np.ndarray], texts: dict[str, str], k: int = 3) -> None:
    from worker.encode import load_encoder

    encoder = load_encoder(ModelSettings())
    q = encoder.encode(encoder.tokenize([query]))[0]
    ids = list(vectors)
    matrix = np.stack([vectors[i] for i in ids])
    scores = matrix @ q / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(q) + 1e-12)
    print(f"\nnearest neighbours of {query!r}:")
    for rank, i in enumerate(np.argsort(-scores)[:k], 1):
        first_line = texts.get(ids[i], "").strip().splitlines()[0][:80] if texts.get(ids[i]) else ""
        print(f"  {rank}. {scores[i]:.3f}  {ids[i]}  — {first_line}")
