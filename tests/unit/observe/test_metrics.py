"""Metrics helpers: observing many values at once reads the same as observing them one by one."""

import random

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from worker.observe.metrics import LATENCY_BUCKETS, observe_many


def _exposition(observe) -> dict[str, float]:
    """The histogram's samples as scraped (name and labels -> value), its creation time aside."""
    registry = CollectorRegistry()
    histogram = Histogram("latency_seconds", "test", buckets=LATENCY_BUCKETS, registry=registry)
    observe(histogram)
    lines = [
        line.rsplit(" ", 1)
        for line in generate_latest(registry).decode().splitlines()
        if line and not line.startswith("#")
    ]
    return {
        name: float(value)
        for name, value in lines
        if not name.startswith("latency_seconds_created")
    }


def test_observe_many_matches_observe_value_by_value():
    rng = random.Random(7)
    values = [rng.expovariate(2.0) for _ in range(2000)] + [
        0.0,
        LATENCY_BUCKETS[3],
        LATENCY_BUCKETS[-1] * 10,
    ]  # on a bound, past the last
    rounds = [values[:1000], values[1000:], []]

    def one_by_one(h):
        for chunk in rounds:
            for v in chunk:
                h.observe(v)

    def many(h):
        for chunk in rounds:
            observe_many(h, chunk)

    expected, got = _exposition(one_by_one), _exposition(many)
    assert expected["latency_seconds_count"] == 2003
    assert got.pop("latency_seconds_sum") == pytest.approx(
        expected.pop("latency_seconds_sum"), rel=1e-12
    )
    assert got == expected  # every bucket, exactly


class Bare:
    """A histogram-like object without prometheus_client's internals."""

    def __init__(self):
        self.seen = []

    def observe(self, v):
        self.seen.append(v)


def test_observe_many_falls_back_to_observe():
    h = Bare()
    observe_many(h, [0.5, 1.5])
    assert h.seen == [0.5, 1.5]
