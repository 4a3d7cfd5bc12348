"""The benchmark command end to end on a small synthetic set: all three measurements, real parts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_bench_measures_all_three_and_writes_json_and_chart(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "loadgen",
        "bench",
        "--synthetic",
        "150",
        "--lengths",
        "mixed",
        "--seed",
        "3",
        "--st-batch-sizes",
        "16,64",
        "--out",
        str(tmp_path),
        "--label",
        "small",
        "--dir",
        str(tmp_path / "stack"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads((tmp_path / "small.json").read_text())
    assert r["documents"]["count"] == 150 and r["documents"]["tokens"] > 150 * 10
    assert r["sentence_transformers"]["batch_size"] in (16, 64)
    assert r["pipeline"]["vectors_out"] == 150 and r["pipeline"]["dedup_hits"] == 0
    # the model's summed forward time over its threads and the run: a share of the run
    assert 0.0 < r["pipeline"]["forward_busy"] <= 1.01
    assert len(r["rounds"]) == 1 and r["rounds"][0]["pipeline"] == r["pipeline"]
    for key in ("sentence_transformers", "raw_forward", "pipeline"):
        assert r[key]["docs_per_s"] > 0 and r[key]["tokens_per_s"] > r[key]["docs_per_s"]
    assert 0.5 < r["raw_forward"]["padding_efficiency"] <= 1.0
    assert r["raw_forward"]["batch_p50_s"] <= r["raw_forward"]["batch_p99_s"]
    raw = (
        r["raw_forward"]["docs_per_s"] + r["raw_forward_after"]["docs_per_s"]
    ) / 2  # either side of the pipeline
    assert r["ratios"]["pipeline_over_raw"] == pytest.approx(
        r["pipeline"]["docs_per_s"] / raw, rel=0.01
    )
    assert (tmp_path / "small.png").stat().st_size > 5_000
    assert "ratio pipeline over raw" in proc.stdout
    subprocess.run(
        [sys.executable, "-m", "worker", "devstack", "down", "--dir", str(tmp_path / "stack")],
        env=env,
        timeout=60,
    )
