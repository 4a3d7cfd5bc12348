"""Stage threads: a function applied to items from a bounded inbox, results put on an outbox.

The worker's pipeline is a chain of these (tokenize → forward → publish), fed and drained by the
main loop, which alone touches the Kafka consumer. Every blocking ``get`` and ``put`` has a timeout
and checks the shared ``abort`` event, so no thread outlives a shutdown. A function that raises
stops its stage and sets ``abort``; ``Stage.check()`` re-raises it in the main loop as a
``StageError`` with the original chained.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from worker.deadline import Deadline
from worker.errors import StageError

log = logging.getLogger(__name__)

WAIT_S = 0.05  # longest a stage thread blocks before looking at the abort event again
_CLOSE = object()  # end of input: each thread passes it on to its siblings and exits


def offer(
    q: queue.Queue, item: Any, abort: threading.Event, deadline: Deadline | None = None
) -> bool:
    """Put ``item`` on ``q``, waiting while it is full; False if ``abort`` was set or ``deadline``
    passed first."""
    while not abort.is_set() and (deadline is None or not deadline.expired()):
        try:
            q.put(item, timeout=WAIT_S)
            return True
        except queue.Full:
            continue
    return False


def drain(q: queue.Queue) -> list:
    """Every item on ``q`` now, without waiting."""
    items = []
    while True:
        try:
            items.append(q.get_nowait())
        except queue.Empty:
            return items


class Stage:
    """``threads`` threads running ``fn`` on items of ``inbox``; results go to ``outbox``.

    With more than one thread, results may come out in a different order than items went in."""

    def __init__(
        self,
        name: str,
        fn: Callable[[Any], Any],
        inbox: queue.Queue,
        outbox: queue.Queue,
        abort: threading.Event,
        *,
        threads: int = 1,
        on_start: Callable[[], None] | None = None,
        on_output: Callable[[], None] | None = None,
        on_take: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self._fn = fn
        self._inbox = inbox
        self._outbox = outbox
        self._abort = abort
        self._on_start = on_start
        self._on_output = on_output or (lambda: None)
        self._on_take = on_take or (lambda: None)
        self._failure: BaseException | None = None
        self._since: list[float | None] = [
            None
        ] * threads  # per thread: when the item it works on was taken
        self._threads = [
            threading.Thread(target=self._loop, args=(i,), name=f"embed-{name}-{i}", daemon=True)
            for i in range(threads)
        ]

    def start(self) -> Stage:
        for t in self._threads:
            t.start()
        return self

    def busy_since(self) -> float | None:
        """When the oldest item now being worked on was taken (``time.monotonic()``), or None."""
        return min((t for t in list(self._since) if t is not None), default=None)

    def _loop(self, slot: int) -> None:
        try:
            if self._on_start is not None:
                self._on_start()
            while not self._abort.is_set():
                try:
                    item = self._inbox.get(timeout=WAIT_S)
                except queue.Empty:
                    continue
                if item is _CLOSE:
                    offer(self._inbox, _CLOSE, self._abort)
                    return
                self._on_take()
                self._since[slot] = time.monotonic()
                try:
                    out = self._fn(item)
                finally:
                    self._since[slot] = None
                if not offer(self._outbox, out, self._abort):
                    return
                self._on_output()
        except BaseException as exc:  # surfaced by check() in the main loop, never swallowed
            log.error("%s stage failed: %s: %s", self.name, type(exc).__name__, exc)
            self._failure = exc
            self._abort.set()
            self._on_output()

    def check(self) -> None:
        """Raise the stage's failure, if it had one, in the calling (main) thread."""
        if self._failure is not None:
            raise StageError(
                f"the {self.name} stage failed: {type(self._failure).__name__}: {self._failure}"
            ) from self._failure

    def close(self, deadline: Deadline) -> None:
        """No more input: the threads finish what is queued, then exit."""
        offer(self._inbox, _CLOSE, self._abort, deadline)

    def join(self, deadline: Deadline) -> bool:
        """Wait for the threads until ``deadline``; True if all exited."""
        for t in self._threads:
            t.join(deadline.remaining())
        return not any(t.is_alive() for t in self._threads)
