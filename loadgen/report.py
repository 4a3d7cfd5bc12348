"""Reports of a measured run: a JSON file, PNG charts, a one-screen summary, and comparisons."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from worker.stats import percentile

PERCENTILES = (50, 90, 99)


def latency_summary(latencies_s: Sequence[float]) -> dict:
    out = {f"p{q}": percentile(latencies_s, q) for q in PERCENTILES}
    out["max"] = max(latencies_s) if latencies_s else None
    out["mean"] = sum(latencies_s) / len(latencies_s) if latencies_s else None
    out["count"] = len(latencies_s)
    return out


def per_second(times: Sequence[float], start: float) -> list[list[float]]:
    """[[second since start, events in that second], ...] with empty seconds filled in."""
    if not times:
        return []
    buckets = [0] * (int(max(times) - start) + 1)
    for t in times:
        buckets[max(0, int(t - start))] += 1
    return [[i, n] for i, n in enumerate(buckets)]


def summary_text(r: dict) -> str:
    lat, c, t = r["latency_s"], r["counts"], r["throughput"]

    def ms(v):
        return "-" if v is None else f"{v * 1000:,.0f} ms"

    lines = [
        f"embed-loadgen measure: {r['label']}",
        f"  published    {c['published']:,} messages in {r['publish']['seconds']:.1f} s ({r['publish']['messages_per_s']:,.0f}/s"
        + (
            f", target {r['config']['rate']:,.0f}/s"
            if r["config"].get("rate")
            else ", as fast as possible"
        )
        + (
            f", fell behind by up to {r['publish']['late_s']:.2f} s)"
            if r["publish"]["late_s"] > 0.05
            else ")"
        ),
        f"  answered     {c['outputs']:,} vectors/deletes, {c['dead_lettered']:,} dead-lettered, {c['duplicates']:,} duplicates",
        f"  unanswered   {c['unanswered']:,} messages (dedup skips or lost); ids missing: {c['missing_ids']:,}"
        + (f" e.g. {', '.join(r['missing_sample'][:3])}" if r["missing_sample"] else ""),
        f"  throughput   {t['docs_per_s']:,.1f} documents/s, {t['tokens_per_s']:,.0f} tokens/s (first send to last answer)",
        f"  latency      p50 {ms(lat['p50'])}  p90 {ms(lat['p90'])}  p99 {ms(lat['p99'])}  max {ms(lat['max'])}",
        f"  lag          peak {r['lag']['peak']:,} messages, final {r['lag']['final']:,} ({len(r['lag']['samples'])} samples)",
    ]
    return "\n".join(lines)


def write_json(report: dict, path: Path) -> None:
    path.write_text(json.dumps(report, indent=2))


def write_charts(report: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(8, 3.5))
    if report["series"]["answers_per_s"]:
        xs, ys = zip(*report["series"]["answers_per_s"])
        ax.plot(xs, ys, label="answered / s")
    if report["series"]["published_per_s"]:
        xs, ys = zip(*report["series"]["published_per_s"])
        ax.plot(xs, ys, label="published / s", alpha=0.7)
    ax.set(
        title=f"Throughput — {report['label']}",
        xlabel="seconds since the first send",
        ylabel="messages / s",
    )
    ax.legend()
    paths.append(_save(fig, out_dir / "throughput.png"))

    fig, ax = plt.subplots(figsize=(8, 3.5))
    if report["lag"]["samples"]:
        xs, ys = zip(*report["lag"]["samples"])
        ax.plot(xs, ys, color="tab:red")
    ax.set(
        title="Consumer lag of the worker group",
        xlabel="seconds since the first send",
        ylabel="messages",
    )
    paths.append(_save(fig, out_dir / "lag.png"))

    fig, ax = plt.subplots(figsize=(8, 3.5))
    lat = report["latency_s"]
    hist = report["series"]["latency_histogram"]
    if hist:
        edges, counts = zip(*hist)
        ax.bar(edges, counts, width=(edges[1] - edges[0]) if len(edges) > 1 else 0.01, align="edge")
        for q, style in (("p50", "-"), ("p90", "--"), ("p99", ":")):
            if lat[q] is not None:
                ax.axvline(
                    lat[q], color="black", linestyle=style, label=f"{q} {lat[q] * 1000:,.0f} ms"
                )
        ax.legend()
    ax.set(
        title="End-to-end latency (intended send → output)", xlabel="seconds", ylabel="documents"
    )
    paths.append(_save(fig, out_dir / "latency.png"))
    return paths


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def histogram(values: Sequence[float], bins: int = 40) -> list[list[float]]:
    if not values:
        return []
    lo, hi = min(values), max(values)
    width = (hi - lo) / bins or 0.001
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / width))] += 1
    return [[lo + i * width, n] for i, n in enumerate(counts)]


COMPARED = [
    ("throughput", "docs_per_s", "documents/s", True),
    ("throughput", "tokens_per_s", "tokens/s", True),
    ("latency_s", "p50", "latency p50 (s)", False),
    ("latency_s", "p90", "latency p90 (s)", False),
    ("latency_s", "p99", "latency p99 (s)", False),
    ("latency_s", "max", "latency max (s)", False),
    ("counts", "missing_ids", "ids missing", False),
    ("counts", "duplicates", "duplicates", False),
    ("counts", "dead_lettered", "dead-lettered", False),
    ("lag", "peak", "peak lag", False),
]


def compare_text(a: dict, b: dict) -> str:
    rows = [f"{'':18} {a['label'][:18]:>18} {b['label'][:18]:>18} {'b / a':>8}"]
    for section, key, name, _higher_is_better in COMPARED:
        va, vb = a[section].get(key), b[section].get(key)
        ratio = (
            f"{vb / va:.2f}x"
            if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and va
            else "-"
        )
        rows.append(f"{name:18} {_fmt(va):>18} {_fmt(vb):>18} {ratio:>8}")
    return "\n".join(rows)


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:,.3f}" if isinstance(v, float) else f"{v:,}"
