"""Start-up measurements against an encoder whose time is a known function of the batch, on a fake clock."""

from __future__ import annotations

import pytest

from worker.config import BatchSettings, Settings
from worker.encode import calibrate
from worker.encode.base import DummyEncoder


class TimedEncoder(DummyEncoder):
    """Each pass advances the fake clock by a fixed cost plus a cost per padded token."""

    def __init__(self, clock, fixed_s: float, per_token_s: float) -> None:
        super().__init__(max_length=256)
        self.clock, self.fixed_s, self.per_token_s = clock, fixed_s, per_token_s

    def encode(self, token_ids):
        self.clock[0] += self.fixed_s + self.per_token_s * max(map(len, token_ids)) * len(token_ids)
        return super().encode(token_ids)


@pytest.fixture
def clock(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(calibrate.time, "perf_counter", lambda: now[0])
    return now


def test_the_batch_overhead_is_the_fixed_cost_in_padded_tokens(clock):
    encoder = TimedEncoder(
        clock, fixed_s=0.004, per_token_s=2e-6
    )  # 4 ms a pass, 2 µs a token: 2,000 tokens
    assert calibrate.batch_overhead_tokens(encoder, 2048) == pytest.approx(2000, abs=2)
    assert calibrate.batch_overhead_tokens(TimedEncoder(clock, 0.0, 2e-6), 2048) == 0


def test_an_unset_cpu_budget_grows_for_a_fast_model_only(clock):
    fast = TimedEncoder(clock, fixed_s=0.003, per_token_s=2e-6)
    assert calibrate.token_budget(Settings(), fast) == 16_384
    slow = TimedEncoder(clock, fixed_s=0.003, per_token_s=2e-4)
    assert calibrate.token_budget(Settings(), slow) == 2_048
    assert calibrate.token_budget(Settings(batch=BatchSettings(max_tokens=4096)), fast) == 4096


def test_a_slow_model_is_timed_once_after_its_warm_up_at_the_budget(clock):
    # start-up time: the warm-up pass doubles as the untimed pass before the timed one
    slow = TimedEncoder(clock, fixed_s=0.003, per_token_s=2e-4)
    calibrate.token_budget(Settings(), slow)
    assert len(slow.batches) == 2


def test_on_cpu_the_overhead_probe_stays_small_but_measures_the_same(clock):
    encoder = TimedEncoder(clock, fixed_s=0.004, per_token_s=2e-6)
    before = clock[0]
    assert calibrate.batch_overhead_tokens(encoder, 16_384) == pytest.approx(2000, abs=2)
    rows = max(encoder.batches)
    assert rows * calibrate.PROBE_TOKENS <= calibrate.CPU_SLOPE_TOKENS
    assert clock[0] - before < 8 * (0.004 + 2e-6 * calibrate.CPU_SLOPE_TOKENS)
