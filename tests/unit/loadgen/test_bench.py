"""The benchmark's rounds: each pipeline over the raw passes either side of it, the mean reported.

The measurements themselves run on real parts in tests/integration/test_bench.py; here the two
measuring functions are replaced by ones returning set rates, so the arithmetic can be checked.
"""

from __future__ import annotations

import pytest

from loadgen import bench
from worker.config import Settings


def _result() -> dict:
    return {
        "settings": {"replicas": 2, "processes": 1},
        "raw_forward": {"docs_per_s": 100.0, "tokens_per_s": 1000.0},
    }


@pytest.fixture
def measured(monkeypatch):
    """Raw passes after each pipeline at 90 then 110 docs/s; pipelines at 90 then 105."""
    raws, pipes, calls = iter([90.0, 110.0, 80.0]), iter([90.0, 105.0, 70.0]), []

    def pipeline(docs, state_dir, partitions=4, *, name="bench"):
        calls.append(("pipeline", name))
        rate = next(pipes)
        return {"docs_per_s": rate, "tokens_per_s": rate * 10, "forward_busy": 0.99}

    def raw(encoder, token_ids, max_tokens, max_size):
        calls.append(("raw", None))
        rate = next(raws)
        return {"docs_per_s": rate, "tokens_per_s": rate * 10}

    monkeypatch.setattr(bench, "bench_pipeline", pipeline)
    monkeypatch.setattr(bench, "bench_raw_forward", raw)
    monkeypatch.setattr("worker.encode.load_encoder", lambda settings: None)
    return calls


def test_each_round_is_over_the_raw_passes_either_side_and_the_mean_is_reported(measured):
    r = _result()
    bench._pipeline_rounds(r, Settings(), [], [], 2048, "unused", 4, rounds=2)
    # each round's worker has a run of its own (topics, group, dedup namespace): no dedup hits
    assert measured == [
        ("pipeline", "bench-r1"),
        ("raw", None),
        ("pipeline", "bench-r2"),
        ("raw", None),
    ]
    # round 1: 90 over (100 + 90) / 2 = 0.947; round 2: 105 over (90 + 110) / 2 = 1.05
    assert [rd["pipeline_over_raw"] for rd in r["rounds"]] == [0.947, 1.05]
    assert r["ratios"]["pipeline_over_raw"] == pytest.approx((0.947 + 1.05) / 2, abs=1e-3)
    assert r["pipeline"]["docs_per_s"] == 90.0  # the first round keeps the one-round keys
    assert r["raw_forward_after"]["docs_per_s"] == 90.0
    text = bench.summary_text(
        {
            **r,
            "documents": {"count": 3, "tokens": 30, "p50_tokens": 10, "p99_tokens": 10},
            "model": {"name": "m", "dtype": "float32", "device": "cpu"},
        }
    )
    assert "round 2: pipeline 105.0/s, raw after it 110.0/s, pipeline over raw 1.050" in text
    assert "ratio pipeline over raw: 1.00x (mean of the rounds)" in text
    assert "model busy during the pipeline: 99.0%, 99.0%" in text


def test_one_round_is_the_pair_either_side_of_one_pipeline(measured):
    r = _result()
    bench._pipeline_rounds(r, Settings(), [], [], 2048, "unused", 4, rounds=1)
    assert len(r["rounds"]) == 1 and r["ratios"]["pipeline_over_raw"] == 0.947


def test_a_pipeline_that_published_nothing_has_no_busy_share_to_print(measured):
    r = _result()
    bench._pipeline_rounds(r, Settings(), [], [], 2048, "unused", 4, rounds=1)
    r["rounds"][0]["pipeline"]["forward_busy"] = None  # busy_s 0: no output came
    text = bench.summary_text(
        {
            **r,
            "documents": {"count": 3, "tokens": 30, "p50_tokens": 10, "p99_tokens": 10},
            "model": {"name": "m", "dtype": "float32", "device": "cpu"},
        }
    )
    assert "model busy during the pipeline: -" in text


def test_rounds_below_one_are_refused():
    with pytest.raises(ValueError, match="rounds must be at least 1"):
        bench.run_bench(
            Settings(), [], state_dir="unused", st_batch_sizes=[16], skip=set(), rounds=0
        )
