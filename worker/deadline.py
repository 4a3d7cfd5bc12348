"""A monotonic time budget, used for every wait in the worker."""

from __future__ import annotations

import time


class Deadline:
    """A point in monotonic time; ``remaining()`` never goes below zero."""

    __slots__ = ("_at",)

    def __init__(self, seconds: float, *, now: float | None = None) -> None:
        start = time.monotonic() if now is None else now
        self._at = start + max(0.0, seconds)

    @classmethod
    def never(cls) -> Deadline:
        d = cls(0.0)
        d._at = float("inf")
        return d

    def remaining(self, *, now: float | None = None) -> float:
        current = time.monotonic() if now is None else now
        return max(0.0, self._at - current)

    def expired(self, *, now: float | None = None) -> bool:
        return self.remaining(now=now) == 0.0

    def remaining_ms(self, *, now: float | None = None) -> int:
        return int(self.remaining(now=now) * 1000)


class Backoff:
    """Exponential retry delays (``first`` doubling up to ``cap``) after consecutive failures."""

    __slots__ = ("_cap", "_first", "_until", "failures")

    def __init__(self, first: float = 0.5, cap: float = 30.0) -> None:
        self._first, self._cap = first, cap
        self.failures = 0
        self._until = Deadline(0.0)

    def fresh(self) -> Backoff:
        """A new backoff on the same schedule, with no failures."""
        return Backoff(self._first, self._cap)

    def failed(self) -> float:
        """Record a failure; returns how long to wait before the next attempt."""
        delay = min(self._cap, self._first * 2**self.failures)
        self.failures += 1
        self._until = Deadline(delay)
        return delay

    def succeeded(self) -> bool:
        """Record a success; returns whether it ended a run of failures."""
        recovered, self.failures = self.failures > 0, 0
        self._until = Deadline(0.0)
        return recovered

    def waiting(self) -> bool:
        """Whether the delay after the last failure is still running."""
        return not self._until.expired()

    def remaining(self) -> float:
        return self._until.remaining()
