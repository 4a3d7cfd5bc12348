"""Small statistics shared by the worker's summary, the benchmark and the load generator's reports."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least q% of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class RunStats:
    """What one worker did in a run; ``summary()`` is the run summary it logs and writes."""

    received: int = 0
    embedded: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    batches: int = 0
    deletes: int = 0
    dedup_hits: int = 0
    dead_lettered: Counter = field(default_factory=Counter)
    encode_s: float = 0.0  # forward passes' time, summed over the replicas
    replicas: int = 1  # forward threads (encode_s over replicas × the run: how busy the model was)
    batch_seconds: list[float] = field(default_factory=list, repr=False)
    started: float = field(default_factory=time.monotonic)
    first_message: float | None = None
    last_output: float | None = None

    def summary(self) -> dict:
        busy = (self.last_output or time.monotonic()) - (self.first_message or self.started)
        busy = max(busy, 1e-9)
        to_wall = (
            time.time() - time.monotonic()
        )  # epoch times let a fleet's summaries share one window
        return {
            "received": self.received,
            "embedded": self.embedded,
            "deletes": self.deletes,
            "dedup_hits": self.dedup_hits,
            "dead_lettered": sum(self.dead_lettered.values()),
            "batches": self.batches,
            "tokens": self.tokens,
            "padded_tokens": self.padded_tokens,
            "docs_per_s": round(self.embedded / busy, 1),
            "tokens_per_s": round(self.tokens / busy, 1),
            "padding_efficiency": round(self.tokens / self.padded_tokens, 3)
            if self.padded_tokens
            else None,
            "encode_s": round(self.encode_s, 3),
            "replicas": self.replicas,
            "batch_p50_s": _round(percentile(self.batch_seconds, 50)),
            "batch_p99_s": _round(percentile(self.batch_seconds, 99)),
            "busy_s": round(busy, 3),
            "first_message_at": _round(self.first_message and self.first_message + to_wall),
            "last_output_at": _round(self.last_output and self.last_output + to_wall),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
