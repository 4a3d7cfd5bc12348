"""Start-up, liveness and readiness, as the main loop and the forward stage report them.

Started: the model is loaded and warmed up (what a startup probe waits for; before it, liveness
is not asked). Live: the process runs and is not stuck: the main loop polled recently (while the
model loads, before the first poll, it counts as live) and no forward pass has run longer than
the same limit (a wedged accelerator keeps the loop polling while nothing is embedded, and its
partitions held). Ready: started, and the loop consumes (partitions assigned, or waiting for an
assignment), and live.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Health:
    def __init__(self, stall_after_s: float) -> None:
        self._stall_after_s = stall_after_s
        self._lock = threading.Lock()
        self._last_poll: float | None = None
        self._warm = False
        self._stopping = False
        self._busy_since: Callable[[], float | None] = lambda: None

    def watch_forward(self, busy_since: Callable[[], float | None]) -> None:
        """Where the oldest forward pass now running started (``time.monotonic()``), or None."""
        self._busy_since = busy_since

    def warmed_up(self) -> None:
        with self._lock:
            self._warm = True

    def polled(self) -> None:
        with self._lock:
            self._last_poll = time.monotonic()

    def stopping(self) -> None:
        with self._lock:
            self._stopping = True

    def started(self) -> tuple[bool, str]:
        with self._lock:
            warm = self._warm
        return (True, "model warmed up") if warm else (False, "loading and warming up the model")

    def live(self) -> tuple[bool, str]:
        with self._lock:
            last = self._last_poll
        now = time.monotonic()
        since = self._busy_since()
        if since is not None and now - since >= self._stall_after_s:
            return (
                False,
                f"a forward pass has run for {now - since:.1f} s (stuck after {self._stall_after_s:.0f} s)",
            )
        if last is None:
            return True, "starting: no poll yet"
        age = now - last
        return (
            age < self._stall_after_s,
            f"last poll {age:.1f} s ago (stuck after {self._stall_after_s:.0f} s)",
        )

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
