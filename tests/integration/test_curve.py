"""The latency curve end to end on a small set: the real worker drains a backlog, then takes an
open-loop stream at half that rate; every document comes out, and the batches it ran at the
deadline kept their padding low (a floor well under docs/performance.md's figures: no timing assertions,
the machine is shared)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from loadgen.curve import LONG_SHARE, curve_docs
from worker.stack.devstack import DevStack

pytestmark = pytest.mark.integration


def test_curve_documents_are_mostly_short_with_a_few_long_ones_and_unique_ids():
    docs = curve_docs(2000, "t", seed=1)
    assert docs == curve_docs(2000, "t", seed=1) and len({d["id"] for d in docs}) == 2000
    long = [d for d in docs if len(d["text"]) > 200]
    assert 0.3 * LONG_SHARE * 2000 < len(long) < 2 * LONG_SHARE * 2000


def test_a_stream_at_half_the_backlog_rate_comes_out_whole_with_little_padding(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "loadgen",
        "curve",
        "--loads",
        "50",
        "--duration",
        "8",
        "--backlog",
        "600",
        "--state-dir",
        str(tmp_path / "stack"),
        "--out",
        str(tmp_path),
        "--label",
        "small",
    ]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    finally:
        DevStack(tmp_path / "stack").down()
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads((tmp_path / "small.json").read_text())
    assert r["backlog"]["docs_per_s"] > 0
    (point,) = r["points"]
    assert point["missing"] == 0 and point["documents"] > 0
    # cut when due from a few documents of mixed lengths, and split for padding: unsplit and cut on
    # arrival such batches ran at 0.42 on these texts (the figure)
    assert point["padding_efficiency"] >= 0.7  # here: 0.85 split, 0.57 with splitting off
    assert 0 < point["latency_s"]["p50"] <= point["latency_s"]["p99"] <= point["latency_s"]["max"]
    assert (tmp_path / "small.png").stat().st_size > 5_000
