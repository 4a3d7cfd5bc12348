"""``embed-loadgen sinkbench``: how fast each index store applies the sink's writes.

The same output messages (vector messages of ``dim`` float32, as the worker publishes them) are
planned in polls of ``batch`` (``EMBED_SINK__MAX_POLL_RECORDS``) and applied to: LanceDB on local
disk, PostgreSQL + pgvector with its HNSW index, and PostgreSQL + pgvector without it; then the
same messages again (a replay: every point an update). Kafka is left out: this is the store's
share of the sink's time. Prints points/s of each, in the same run.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from worker.consume.decode import Document, decode_record, encode_document
from worker.encode.base import ModelInfo
from worker.publish import codec
from worker.sink.events import plan

if TYPE_CHECKING:
    from worker.sink.index import Index
    from worker.sink.postgres import PostgresIndex


def messages(n: int, dim: int, seed: int = 0) -> list[tuple[bytes | None, bytes | None]]:
    """``n`` vector messages of distinct documents, unit vectors, as the worker writes them."""
    rng = np.random.default_rng(seed)
    info = ModelInfo("sinkbench-model", dim, "float32", "cpu", "mean", True, 256)
    out = []
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for i in range(n):
        doc_id = f"doc-{i}"
        doc = decode_record(
            "bench", 0, i, 0, doc_id.encode(), encode_document(doc_id, "text", metadata={"n": i})
        )
        assert isinstance(doc, Document)  # a well-formed upsert
        m = codec.vector_message(doc, vectors[i], info, "float32", 0)
        out.append((m.key, m.value))
    return out


def _apply_all(index, msgs: list[tuple[bytes | None, bytes | None]], batch: int) -> float:
    started = time.perf_counter()
    for i in range(0, len(msgs), batch):
        index.apply(plan(msgs[i : i + batch], index.model))
    return time.perf_counter() - started


def run_sinkbench(n: int, dim: int, batch: int, postgres_url: str | None) -> dict:
    from worker.sink.index import Index

    msgs = messages(n, dim)
    result: dict = {"points": n, "dim": dim, "batch": batch, "stores": {}}
    with tempfile.TemporaryDirectory() as tmp:
        stores: list[tuple[str, Callable[[], Index | PostgresIndex]]] = [
            ("lancedb", lambda: Index(str(Path(tmp) / "lance"), "bench"))
        ]
        if postgres_url:
            from worker.sink.postgres import PostgresIndex

            stamp = int(time.time())
            stores += [
                (
                    "postgres+hnsw",
                    lambda: PostgresIndex(postgres_url, f"sinkbench_hnsw_{stamp}", hnsw=True),
                ),
                (
                    "postgres",
                    lambda: PostgresIndex(postgres_url, f"sinkbench_plain_{stamp}", hnsw=False),
                ),
            ]
        for name, make in stores:
            index = make()
            insert_s = _apply_all(index, msgs, batch)
            replay_s = _apply_all(index, msgs, batch)
            assert index.count() == n, (name, index.count())
            result["stores"][name] = {
                "insert_points_per_s": round(n / insert_s, 1),
                "replay_points_per_s": round(n / replay_s, 1),
                "insert_s": round(insert_s, 3),
                "replay_s": round(replay_s, 3),
            }
            if hasattr(index, "drop"):
                index.drop()
    return result


def summary_text(r: dict) -> str:
    rows = [
        f"sink stores: {r['points']:,} points of {r['dim']} float32, polls of {r['batch']} (Kafka left out)",
        f"{'store':16} {'insert points/s':>16} {'replay points/s':>16}",
    ]
    for name, s in r["stores"].items():
        rows.append(
            f"{name:16} {s['insert_points_per_s']:>16,.0f} {s['replay_points_per_s']:>16,.0f}"
        )
    return "\n".join(rows)
