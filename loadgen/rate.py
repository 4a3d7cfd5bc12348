"""Open-loop send schedules (pure): when message i is *meant* to be sent.

The schedule never looks at how the system keeps up. A sender that falls behind sends late messages
at once, and each message carries its intended send time as its Kafka timestamp, so measured
latency includes the wait a real client would have had (no coordinated omission).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Burst:
    at_s: float
    duration_s: float
    multiplier: float

    @classmethod
    def parse(cls, text: str) -> Burst:
        """``AT:SECONDS:MULTIPLIER``, e.g. ``30:5:4`` = four times the rate from t=30 s to t=35 s."""
        m = re.fullmatch(r"([\d.]+):([\d.]+):([\d.]+)", text)
        if not m:
            raise ValueError(f"a burst is AT:SECONDS:MULTIPLIER (e.g. 30:5:4), not {text!r}")
        burst = cls(float(m.group(1)), float(m.group(2)), float(m.group(3)))
        if burst.duration_s <= 0 or burst.multiplier <= 0:
            raise ValueError(f"a burst needs a positive duration and multiplier: {text!r}")
        return burst


@dataclass(frozen=True)
class Schedule:
    """``rate`` messages/s, optionally ramping linearly to ``ramp_to`` over ``ramp_s``, with bursts."""

    rate: float
    ramp_to: float | None = None
    ramp_s: float = 0.0
    bursts: tuple[Burst, ...] = ()

    def __post_init__(self) -> None:
        if self.rate <= 0 or (self.ramp_to is not None and (self.ramp_to <= 0 or self.ramp_s <= 0)):
            raise ValueError("rates must be positive, and a ramp needs a positive duration")

    def rate_at(self, t: float) -> float:
        base = self.rate
        if self.ramp_to is not None:
            base = self.rate + (self.ramp_to - self.rate) * min(1.0, max(0.0, t / self.ramp_s))
        for b in self.bursts:
            if b.at_s <= t < b.at_s + b.duration_s:
                base *= b.multiplier
        return base

    def offsets(self, count: int) -> list[float]:
        """Intended send time of each of ``count`` messages, in seconds from the start."""
        out, t = [], 0.0
        for _ in range(count):
            out.append(t)
            t += 1.0 / self.rate_at(t)
        return out

    def count_for(self, duration_s: float) -> int:
        """How many messages the schedule sends in its first ``duration_s`` seconds."""
        n, t = 0, 0.0
        while t < duration_s - 1e-9:  # summed intervals drift below the exact time
            n += 1
            t += 1.0 / self.rate_at(t)
        return n
