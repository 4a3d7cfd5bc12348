"""The throughput benchmark: three ways to embed the same documents, in one run, on one machine.

1. sentence-transformers ``encode()`` at its best batch size (what a user would otherwise write);
2. the raw forward pass over length-sorted token-budget batches (the practical limit of the model),
   before the pipeline and again after it;
3. the full pipeline: documents published to the real local broker, one ``embed-worker`` process
   with Redis dedup on, until the output topic holds every vector.

Ratios 3/1 and 3/2 are what count on noisy machines: all three run back to back in one process,
and 3/2 is over the mean of the raw passes either side of the pipeline. With ``rounds`` above one,
(3) and (2) alternate that many times (raw, pipeline, raw, pipeline, raw, ...): a shared machine
drifts by several percent within a minute, so one pair's ratio is one sample, and the mean of the
rounds' ratios is the figure to quote.
"""

from __future__ import annotations

import gc
import os
import platform
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from worker.batch.policy import BatchLimits, default_max_tokens, sorted_batches
from worker.config import KafkaSettings, Settings
from worker.stats import percentile


def _rates(docs: int, tokens: int, seconds: float) -> dict:
    return {
        "docs_per_s": round(docs / seconds, 2),
        "tokens_per_s": round(tokens / seconds, 1),
        "seconds": round(seconds, 3),
    }


def bench_sentence_transformers(
    texts: Sequence[str], model_path: str, device: str, batch_sizes: Sequence[int], tokens: int
) -> dict:
    """Pick the best batch size on a probe of the documents, then time the whole set with it, with
    a torch thread per core (what a user gets by default: the worker's encoder may have set fewer;
    recorded as its ``torch_threads``)."""
    import torch
    from sentence_transformers import SentenceTransformer

    from worker.encode.parallel import machine_cores

    threads = torch.get_num_threads()
    torch.set_num_threads(machine_cores())
    try:
        out = _time_sentence_transformers(
            SentenceTransformer(model_path, device=device), texts, batch_sizes, tokens
        )
        out["torch_threads"] = torch.get_num_threads()
        return out
    finally:
        torch.set_num_threads(threads)


def _time_sentence_transformers(
    model, texts: Sequence[str], batch_sizes: Sequence[int], tokens: int
) -> dict:
    probe = list(texts[: min(len(texts), 400)])
    model.encode(probe[:32], batch_size=32)  # warm-up
    probe_rates = {}
    for bs in batch_sizes:
        started = time.perf_counter()
        model.encode(probe, batch_size=bs)
        probe_rates[bs] = len(probe) / (time.perf_counter() - started)
    best = max(probe_rates, key=probe_rates.__getitem__)
    started = time.perf_counter()
    model.encode(list(texts), batch_size=best)
    out = _rates(len(texts), tokens, time.perf_counter() - started)
    out.update(
        batch_size=best, probe_docs_per_s={str(k): round(v, 1) for k, v in probe_rates.items()}
    )
    return out


def bench_raw_forward(encoder, token_ids: list[list[int]], max_tokens: int, max_size: int) -> dict:
    """Every document sorted by length at once and cut into token-budget batches: the model's limit.
    The batches run on as many threads as the worker runs forward replicas (``encoder.replicas``),
    each taking the next batch when it is done, so the limit has the worker's parallelism."""
    lengths = [len(ids) for ids in token_ids]
    cuts = sorted_batches(lengths, BatchLimits(max_tokens, max_size, 0.0))
    replicas = encoder.replicas
    encoder.encode([token_ids[i] for i in cuts[0].indices[:4]])  # warm-up
    todo, seconds, lock = iter(cuts), [], threading.Lock()
    failed: list[BaseException] = []

    def replica() -> None:
        bind = getattr(encoder, "bind_thread", None)
        if bind:
            bind()
        while not failed:
            with lock:
                cut = next(todo, None)
            if cut is None:
                return
            batch = [token_ids[i] for i in cut.indices]
            started = time.perf_counter()
            try:
                encoder.encode(batch)
            except BaseException as exc:  # the others stop too: a partial pass has no rate
                failed.append(exc)
                return
            took = time.perf_counter() - started
            with lock:
                seconds.append(took)

    started = time.perf_counter()
    threads = [threading.Thread(target=replica) for _ in range(replicas)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if failed:
        raise failed[0]
    real, padded = sum(c.real_tokens for c in cuts), sum(c.padded_tokens for c in cuts)
    out = _rates(len(token_ids), real, wall)
    p50, p99 = percentile(seconds, 50), percentile(seconds, 99)
    assert p50 is not None and p99 is not None  # cuts[0] exists (the warm-up): a batch was timed
    out.update(
        batches=len(cuts),
        replicas=replicas,
        padding_efficiency=round(real / padded, 3),
        batch_p50_s=round(p50, 4),
        batch_p99_s=round(p99, 4),
    )
    return out


def accuracy_vs_fp32(
    encoder, settings: Settings, token_ids: list[list[int]], max_tokens: int
) -> dict:
    """How far a quantized model's vectors are from the fp32 model's, on the benchmark documents."""
    import numpy as np

    from worker.encode import load_encoder

    reference = load_encoder(
        settings.model.model_copy(update={"quantize": "none", "dtype": "float32"})
    )
    lengths = [len(t) for t in token_ids]
    ours, ref = (
        np.zeros((len(token_ids), encoder.info.dim), np.float32),
        np.zeros((len(token_ids), encoder.info.dim), np.float32),
    )
    for cut in sorted_batches(lengths, BatchLimits(max_tokens, settings.batch.max_size, 0.0)):
        idx = list(cut.indices)
        ours[idx] = encoder.encode([token_ids[i] for i in idx])
        ref[idx] = reference.encode([token_ids[i] for i in idx])
    cos = (ours * ref).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    sim_ours, sim_ref = ours @ ours.T, ref @ ref.T
    np.fill_diagonal(sim_ours, -np.inf)
    np.fill_diagonal(sim_ref, -np.inf)
    return {
        "cosine_mean": round(float(cos.mean()), 5),
        "cosine_p1": round(float(np.percentile(cos, 1)), 5),
        "cosine_min": round(float(cos.min()), 5),
        "top1_neighbour_agreement": round(
            float((sim_ours.argmax(1) == sim_ref.argmax(1)).mean()), 4
        ),
    }


def bench_pipeline(
    docs: list[dict], state_dir: str, partitions: int = 4, *, name: str = "bench"
) -> dict:
    """Publish to the local broker, then one ``embed-worker run`` (EMBED_PROCESSES processes)
    drains the topic with dedup on (run ``name``: its own topics, group and Redis namespace).
    ``forward_busy`` is the share of the run the model was busy: the forward passes' summed time
    over the forward threads of every process (their ``replicas``) × the run."""
    from loadgen.publish import TopicSender, publish
    from loadgen.readback import read_topic
    from worker.stack.devstack import LocalRun

    run = LocalRun.start(name, state_dir, partitions)
    kafka = KafkaSettings(bootstrap_servers=run.addresses.kafka)
    sender = TopicSender(kafka)
    try:
        publish(sender, run.input_topic, docs)
    finally:
        sender.close()
    summary = run.run_worker(idle_s=3, quiet=True)
    vectors = sum(
        1
        for r in read_topic(kafka, run.output_topic, expect=len(docs), timeout_s=60)
        if r.value is not None
    )
    out = {
        "docs_per_s": summary["docs_per_s"],
        "tokens_per_s": summary["tokens_per_s"],
        "seconds": summary["busy_s"],
    }
    out.update(
        vectors_out=vectors,
        batches=summary["batches"],
        padding_efficiency=summary["padding_efficiency"],
        batch_p50_s=summary["batch_p50_s"],
        batch_p99_s=summary["batch_p99_s"],
        dedup_hits=summary["dedup_hits"],
        forward_busy=round(summary["encode_s"] / summary["replicas"] / summary["busy_s"], 3)
        if summary["busy_s"] > 0
        else None,
    )
    return out


def environment() -> dict:
    import torch
    import transformers

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def run_bench(
    settings: Settings,
    docs: list[dict],
    *,
    state_dir: str,
    st_batch_sizes: Sequence[int],
    skip: set[str],
    partitions: int = 4,
    rounds: int = 1,
) -> dict:
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {rounds}")
    from worker.encode import load_encoder
    from worker.encode.transformer import resolve_model_path

    encoder = load_encoder(settings.model)
    info = encoder.info
    texts = [d["text"] for d in docs]
    started = time.perf_counter()
    token_ids = encoder.tokenize(texts)
    tokenize_s = time.perf_counter() - started
    lengths = [len(t) for t in token_ids]
    tokens = sum(lengths)
    max_tokens = settings.batch.max_tokens or default_max_tokens(
        info.device.split(":")[0], info.max_length
    )
    result = {
        "environment": environment(),
        "model": {
            "name": info.name,
            "dim": info.dim,
            "dtype": info.dtype,
            "device": info.device,
            "max_length": info.max_length,
            "quantize": info.quantize,
        },
        "settings": {
            "max_tokens": max_tokens,
            "max_size": settings.batch.max_size,
            "max_wait_ms": settings.batch.max_wait_ms,
            "replicas": encoder.replicas,
            "processes": settings.processes,
            "partitions": partitions,
            "autocast": settings.model.autocast,
        },
        "documents": {
            "count": len(docs),
            "tokens": tokens,
            "p50_tokens": percentile(lengths, 50),
            "p99_tokens": percentile(lengths, 99),
            "max_tokens": max(lengths),
            "tokenize_docs_per_s": round(len(docs) / tokenize_s, 1),
        },
    }
    if "st" not in skip:
        result["sentence_transformers"] = bench_sentence_transformers(
            texts, resolve_model_path(info.name), info.device, st_batch_sizes, tokens
        )
    result["raw_forward"] = bench_raw_forward(
        encoder, token_ids, max_tokens, settings.batch.max_size
    )
    if info.quantize != "none":
        result["accuracy_vs_fp32"] = accuracy_vs_fp32(encoder, settings, token_ids, max_tokens)
    del encoder
    _free_device_memory()
    if "pipeline" not in skip:
        _pipeline_rounds(
            result, settings, docs, token_ids, max_tokens, state_dir, partitions, rounds
        )
    return result


def _fresh_raw_forward(settings: Settings, token_ids: list[list[int]], max_tokens: int) -> dict:
    """The raw pass on an encoder loaded for it and freed again before the next worker runs: the
    machine's memory and threads (and an accelerator's) are the worker's while it runs."""
    from worker.encode import load_encoder

    encoder = load_encoder(settings.model)
    try:
        return bench_raw_forward(encoder, token_ids, max_tokens, settings.batch.max_size)
    finally:
        del encoder
        _free_device_memory()


def _free_device_memory() -> None:
    """Collect a dropped encoder now and hand an accelerator's cached blocks back (PyTorch keeps
    them for this process otherwise, beside the worker's process on the same device)."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _pipeline_rounds(
    result: dict,
    settings: Settings,
    docs: list[dict],
    token_ids: list[list[int]],
    max_tokens: int,
    state_dir: str,
    partitions: int,
    rounds: int,
) -> None:
    """The pipeline, each time followed by the raw pass again, ``rounds`` times. A round's ratio is
    its pipeline over the mean of the raw passes either side of it, so drift of a shared machine
    cancels; the ratio reported is the mean over the rounds. The first round keeps the keys
    ``pipeline`` and ``raw_forward_after``; every round is under ``rounds``."""
    before, per_round = result["raw_forward"], []
    for i in range(rounds):
        pipeline = bench_pipeline(docs, state_dir, partitions, name=f"bench-r{i + 1}")
        after = _fresh_raw_forward(settings, token_ids, max_tokens)
        raw = (before["docs_per_s"] + after["docs_per_s"]) / 2
        per_round.append(
            {
                "pipeline": pipeline,
                "raw_forward_after": after,
                "pipeline_over_raw": round(pipeline["docs_per_s"] / raw, 3),
            }
        )
        before = after
    result["pipeline"] = per_round[0]["pipeline"]
    result["raw_forward_after"] = per_round[0]["raw_forward_after"]
    result["rounds"] = per_round
    ratios = [r["pipeline_over_raw"] for r in per_round]
    result["ratios"] = {"pipeline_over_raw": round(sum(ratios) / len(ratios), 3)}
    if "sentence_transformers" in result:
        pipe = sum(r["pipeline"]["docs_per_s"] for r in per_round) / len(per_round)
        result["ratios"]["pipeline_over_sentence_transformers"] = round(
            pipe / result["sentence_transformers"]["docs_per_s"], 3
        )


def summary_text(r: dict) -> str:
    rows = [
        f"{r['documents']['count']:,} documents, {r['documents']['tokens']:,} tokens after truncation "
        f"(p50 {r['documents']['p50_tokens']}, p99 {r['documents']['p99_tokens']}), {r['model']['name']} {r['model']['dtype']} on {r['model']['device']}",
        f"{'':40} {'documents/s':>12} {'tokens/s':>12} {'padding eff.':>12} {'batch p50':>10} {'batch p99':>10}",
    ]
    names = {
        "sentence_transformers": "1 sentence-transformers encode()",
        "raw_forward": "2 raw sorted forward (limit)",
        "pipeline": "3 full pipeline (Kafka, Redis)",
        "raw_forward_after": "2 raw sorted forward, again after 3",
    }
    for key, name in names.items():
        m = r.get(key)
        if m is None:
            continue
        label = name + (f" bs={m['batch_size']}" if key == "sentence_transformers" else "")

        def fmt(v, spec):
            return format("-", spec[:3]) if v is None else format(v, spec)

        rows.append(
            f"{label:40} {m['docs_per_s']:>12,.1f} {m['tokens_per_s']:>12,.0f} {fmt(m.get('padding_efficiency'), '>12.3f')} "
            f"{fmt(m.get('batch_p50_s'), '>10.3f')} {fmt(m.get('batch_p99_s'), '>10.3f')}"
        )
    rounds = r.get("rounds", [])
    if len(rounds) > 1:
        for i, rd in enumerate(rounds, 1):
            rows.append(
                f"round {i}: pipeline {rd['pipeline']['docs_per_s']:,.1f}/s, raw after it "
                f"{rd['raw_forward_after']['docs_per_s']:,.1f}/s, pipeline over raw {rd['pipeline_over_raw']:.3f}"
            )
    if rounds:
        busy = [rd["pipeline"]["forward_busy"] for rd in rounds]
        rows.append(
            "model busy during the pipeline: "
            + ", ".join("-" if b is None else f"{b:.1%}" for b in busy)
        )
    for k, v in r.get("ratios", {}).items():
        mean = " (mean of the rounds)" if k == "pipeline_over_raw" and len(rounds) > 1 else ""
        rows.append(f"ratio {k.replace('_', ' ')}: {v:.2f}x{mean}")
    if "accuracy_vs_fp32" in r:
        a = r["accuracy_vs_fp32"]
        rows.append(
            f"{r['model']['quantize']} vs fp32: cosine mean {a['cosine_mean']:.4f}, p1 {a['cosine_p1']:.4f}, min {a['cosine_min']:.4f}; "
            f"top-1 neighbour agreement {a['top1_neighbour_agreement']:.1%}"
        )
    return "\n".join(rows)


def write_chart(r: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ("sentence_transformers", "raw_forward", "pipeline") if k in r]
    labels = {
        "sentence_transformers": "sentence-transformers\nencode()",
        "raw_forward": "raw sorted\nforward",
        "pipeline": "full pipeline\n(Kafka + Redis)",
    }
    fig, ax = plt.subplots(figsize=(7, 3.5))
    bars = ax.bar(
        [labels[k] for k in keys],
        [r[k]["docs_per_s"] for k in keys],
        color=["tab:gray", "tab:blue", "tab:green"][: len(keys)],
    )
    ax.bar_label(bars, fmt="%.1f")
    ax.set(
        ylabel="documents / s",
        title=f"{r['model']['name']} on {r['model']['device']}: {r['documents']['count']:,} documents",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
