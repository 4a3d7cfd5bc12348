"""The host-path benchmark end to end on a small set: both bare loops and the worker move every
document through the real local broker (no timing assertions: the machine is shared)."""

from __future__ import annotations

import math

import pytest

from loadgen.hostpath import run_hostpath, short_texts
from worker.stack.devstack import DevStack

pytestmark = pytest.mark.integration

N = 1500


def test_short_texts_are_deterministic_short_and_uniquely_keyed():
    docs = short_texts(N, seed=3)
    assert docs == short_texts(N, seed=3)
    assert len({d["id"] for d in docs}) == N
    assert all(40 <= len(d["text"]) <= 200 and isinstance(d["metadata"], dict) for d in docs)


def test_hostpath_moves_every_document_in_both_loops_and_both_formats(tmp_path):
    try:
        r = run_hostpath(N, tmp_path / "stack", debezium=True)
    finally:
        DevStack(tmp_path / "stack").down()
    for key in ("bare_before", "worker", "worker_debezium", "bare_after"):
        assert r[key]["documents"] == N, key
        assert r[key]["docs_per_s"] > 0 and r[key]["seconds"] > 0, key
    assert r["worker"]["dedup_hits"] == 0
    assert r["ratio"] > 0 and math.isfinite(r["ratio"]) and r["debezium_vs_msgpack"] > 0
    assert 10 < r["mean_tokens"] < 40
    assert "profile" not in r
