"""The latency curve: one worker, fed the same kind of documents open-loop at rising shares of the
rate at which it drains a backlog, measured first in the same run.

A streaming worker mostly runs well below its backlog rate, where what counts is latency, and
whether the model's work stays efficient when deadlines, not full batches, decide what runs. For
each load the curve reports end-to-end latency (p50, p99, max: from each document's intended send
time, so a late sender cannot hide a slow worker), the lag at the end, and, from the worker's own
metrics over that phase, padding efficiency (real over padded tokens) and documents per batch.

The documents are the host-path benchmark's real short texts with 3% of the sample corpus's
documents (mostly far longer) mixed in, each with its own id so dedup skips none.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

LONG_SHARE = (
    0.03  # of the documents come from the sample corpus (most are far longer than a sentence)
)
LOADS = (0.25, 0.5, 0.75, 0.9)


def curve_docs(n: int, tag: str, seed: int = 0) -> list[dict]:
    """``n`` documents: real short sentences, 3% whole corpus documents, ids unique to ``tag``."""
    from loadgen.corpus import sample_corpus
    from loadgen.hostpath import short_texts

    rng = random.Random(seed)
    short = short_texts(n, seed)
    corpus = sample_corpus()
    out = []
    for i, doc in enumerate(short):
        text = rng.choice(corpus)["text"] if rng.random() < LONG_SHARE else doc["text"]
        out.append({"id": f"{tag}-{i}", "text": text, "metadata": {"source": "curve"}})
    return out


def _scrape(port: int) -> dict[str, float]:
    """The worker's counters and histogram sums the curve needs, summed over labels."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    wanted = {
        "embed_tokens_total",
        "embed_batch_tokens_sum",
        "embed_batch_size_sum",
        "embed_batch_size_count",
        "embed_documents_total",
    }
    out = dict.fromkeys(wanted, 0.0)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in wanted:
                out[s.name] += s.value
    return out


def _wait_ready(port: int, proc: subprocess.Popen, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the curve's embed-worker exited {proc.returncode} before it was ready"
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the curve's embed-worker was not ready within {timeout_s:.0f} s")


def _phase(settings, port: int, load: float, rate: float, duration_s: float, seed: int) -> dict:
    from loadgen.rate import Schedule
    from loadgen.session import run_measured

    schedule = Schedule(rate)
    docs = curve_docs(schedule.count_for(duration_s), f"load{round(load * 100)}", seed)
    before = _scrape(port)
    report = run_measured(
        settings,
        docs,
        label=f"load-{round(load * 100)}",
        schedule=schedule,
        settle_s=10.0,
        timeout_s=duration_s * 4 + 120,
    )
    after = _scrape(port)
    delta = {k: after[k] - before[k] for k in after}
    latency = report["latency_s"]
    return {
        "load": load,
        "rate": round(rate, 1),
        "documents": len(docs),
        "missing": report["counts"]["missing_ids"],
        "latency_s": {
            k: (round(latency[k], 3) if latency[k] is not None else None)
            for k in ("p50", "p90", "p99", "max")
        },
        "lag_peak": report["lag"]["peak"],
        "lag_final": report["lag"]["final"],
        "padding_efficiency": round(
            delta["embed_tokens_total"] / delta["embed_batch_tokens_sum"], 3
        )
        if delta["embed_batch_tokens_sum"]
        else None,
        "docs_per_batch": round(delta["embed_batch_size_sum"] / delta["embed_batch_size_count"], 1)
        if delta["embed_batch_size_count"]
        else None,
        "throughput_docs_per_s": report["throughput"]["docs_per_s"],
    }


def run_curve(
    state_dir: str | Path,
    *,
    loads: Sequence[float] = LOADS,
    duration_s: float = 30.0,
    backlog: int = 3000,
    partitions: int = 4,
    seed: int = 0,
    progress=print,
) -> dict:
    """Backlog rate first, then one phase per load against one long-running worker; returns every figure."""
    from loadgen.session import run_measured
    from worker.config import KafkaSettings, Settings
    from worker.stack.devstack import LocalRun, create_topics, free_port

    run = LocalRun.start("curve", state_dir, partitions)
    backlog_lane = replace(run, name=f"{run.name}.backlog")
    create_topics(
        run.addresses.kafka,
        {
            backlog_lane.input_topic: partitions,
            backlog_lane.output_topic: partitions,
            f"{backlog_lane.name}.dlq": 1,
        },
    )
    from loadgen.hostpath import _publish

    _publish(run.addresses.kafka, backlog_lane.input_topic, curve_docs(backlog, "backlog", seed))
    drained = backlog_lane.run_worker(idle_s=2, quiet=True)
    backlog_rate = drained["docs_per_s"]
    progress(
        f"backlog: {backlog:,} documents drained at {backlog_rate:,.1f} documents/s (padding efficiency {drained['padding_efficiency']})"
    )
    result: dict[str, Any] = {
        "documents": "real short texts (host-path sentences) with 3% sample-corpus documents",
        "backlog": {
            "documents": backlog,
            "docs_per_s": backlog_rate,
            "padding_efficiency": drained["padding_efficiency"],
            "batches": drained["batches"],
        },
        "duration_s": duration_s,
        "partitions": partitions,
        "points": [],
    }

    port = free_port()
    env = {
        **run.env(),
        "EMBED_METRICS__PORT": str(port),
        "EMBED_LOG_LEVEL": os.environ.get("EMBED_LOG_LEVEL", "WARNING"),
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "worker", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_ready(port, worker)
        settings = Settings(
            kafka=KafkaSettings(
                bootstrap_servers=run.addresses.kafka,
                input_topic=run.input_topic,
                output_topic=run.output_topic,
                dlq_topic=f"{run.name}.dlq",
                group_id=run.name,
            )
        )
        # the worker joins its group only now (seconds on the local broker): a few documents first,
        # answered before the first measured phase, so no phase pays for the join
        run_measured(
            settings, curve_docs(20, "warm-up", seed), label="warm-up", settle_s=10.0, timeout_s=120
        )
        for load in loads:
            point = _phase(settings, port, load, load * backlog_rate, duration_s, seed)
            result["points"].append(point)
            lat = point["latency_s"]
            progress(
                f"{load:.0%} load ({point['rate']:,.1f}/s): latency p50 {lat['p50']} s, p99 {lat['p99']} s, max {lat['max']} s; "
                f"padding efficiency {point['padding_efficiency']}, {point['docs_per_batch']} documents a batch, lag at the end {point['lag_final']}"
            )
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            _, stderr = worker.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            stderr = ""
    if worker.returncode not in (0, None):
        raise RuntimeError(
            f"the curve's embed-worker exited {worker.returncode}: {(stderr or '').strip()[-500:]}"
        )
    return result


def summary_text(r: dict) -> str:
    b = r["backlog"]
    rows = [
        f"backlog rate {b['docs_per_s']:,.1f} documents/s ({b['documents']:,} documents, padding efficiency {b['padding_efficiency']}); "
        f"{r['duration_s']:.0f} s a load",
        f"{'load':>6} {'docs/s':>9} {'p50 s':>8} {'p99 s':>8} {'max s':>8} {'padding':>8} {'docs/batch':>11} {'lag end':>8} {'missing':>8}",
    ]
    for p in r["points"]:
        lat = p["latency_s"]
        rows.append(
            f"{p['load']:>6.0%} {p['rate']:>9,.1f} {lat['p50']:>8} {lat['p99']:>8} {lat['max']:>8} {p['padding_efficiency']!s:>8} "
            f"{p['docs_per_batch']!s:>11} {p['lag_final']:>8} {p['missing']:>8}"
        )
    return "\n".join(rows)


def write_chart(r: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loads = [p["load"] * 100 for p in r["points"]]
    fig, (lat, eff) = plt.subplots(1, 2, figsize=(10, 3.5))
    for key in ("p50", "p99", "max"):
        lat.plot(loads, [p["latency_s"][key] for p in r["points"]], marker="o", label=key)
    lat.set(xlabel="% of the backlog rate", ylabel="end-to-end latency (s)", title="latency")
    lat.legend()
    eff.plot(loads, [p["padding_efficiency"] for p in r["points"]], marker="o", color="tab:green")
    eff.set(
        xlabel="% of the backlog rate",
        ylabel="real / padded tokens",
        ylim=(0, 1.05),
        title="padding efficiency",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
