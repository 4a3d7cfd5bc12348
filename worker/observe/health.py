"""Liveness and readiness, as the main loop reports them.

Live: the process runs and its loop is not stuck (the last poll is recent; while the model loads,
before the first poll, it counts as live). Ready: the model is warmed up and the loop consumes
(partitions assigned, or waiting for an assignment).
"""

from __future__ import annotations

import threading
import time


class Health:
    def __init__(self, stall_after_s: float) -> None:
        self._stall_after_s = stall_after_s
        self._lock = threading.Lock()
        self._last_poll: float | None = None
        self._warm = False
        self._stopping = False

    def warmed_up(self) -> None:
        with self._lock:
            self._warm = True

    def polled(self) -> None:
        with self._lock:
            self._last_poll = time.monotonic()

    def stopping(self) -> None:
        with self._lock:
            self._stopping = True

    def live(self) -> tuple[bool, str]:
        with self._lock:
            last = self._last_poll
        if last is None:
            return True, "starting: no poll yet"
        age = time.monotonic() - last
        return age < self._stall_after_s, f"last poll {age:.1f} s ago (stuck after {self._stall_after_s:.0f} s)"

    def ready(self) -> tuple[bool, str]:
        with self._lock:
            warm, polled, stopping = self._warm, self._last_poll is not None, self._stopping
        if stopping:
            return False, "stopping"
        if not warm:
            return False, "model not warmed up yet"
        if not polled:
            return False, "not consuming yet"
        live, why = self.live()
        return live, "consuming" if live else why
