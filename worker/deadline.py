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
    def never(cls) -> "Deadline":
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
