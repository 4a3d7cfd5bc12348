"""The CDC walk-through with real parts: a PostgreSQL table, its changes as Debezium events on the
local broker, the worker, and the pgvector sink in the same PostgreSQL."""

from __future__ import annotations

import pytest

from loadgen.cdcdemo import run_cdc
from worker.stack.devstack import DevStack

pytestmark = pytest.mark.integration


def test_a_tables_snapshot_updates_deletes_and_inserts_reach_the_pgvector_index(tmp_path):
    try:
        r = run_cdc(str(tmp_path / "stack"), 60, log=lambda *_: None)
    finally:
        DevStack(tmp_path / "stack").down()
    assert (r["updates"], r["deletes"], r["inserts"]) == (6, 3, 6)
    assert r["first"]["embedded"] == 60 and r["first"]["dead_lettered"] == 0
    assert (r["second"]["embedded"], r["second"]["deletes"]) == (
        6 + 6,
        3 * 2,
    )  # a delete and its tombstone each
    assert r["live_rows"] == 60 - 3 + 6 == r["points"]
    assert r["missing"] == r["extra"] == r["stale"] == [] and r["ok"]
