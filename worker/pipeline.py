"""The threaded part of the data path (tokenize, forward ×replicas, publish), as the main loop
sees it; where it sits in the data flow: docs/architecture.md.

The main loop feeds each stage and drains what comes back, never blocking on a full queue: it
pauses consumption instead (``has_room``), and keeps a ready batch until the forward queue has room.
So the consumer keeps polling while a long batch runs, and ``max_poll_interval_ms`` is never hit.
The forward queue holds one batch per replica beyond those running, so the model never waits for
the host. A stage that fails surfaces here, in ``check()``, with its cause chained.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from worker.batch.waiting import Batch
from worker.consume.decode import Document
from worker.deadline import Deadline
from worker.encode.base import Encoder
from worker.encode.chunking import TextLimits, prepare
from worker.encode.forward import forward
from worker.publish.sender import Sender, Sent
from worker.stages import Stage, drain, offer

Tokenized = tuple[
    list[Document], float
]  # rows (upserts tokenized, long ones maybe in chunks) and when they arrived


class Pipeline:
    def __init__(
        self,
        encoder: Encoder,
        sender: Sender,
        limits: TextLimits,
        *,
        replicas: int = 1,
        tokenize_depth: int = 8,
        observe: Callable[[str, float], None] = lambda stage, seconds: None,
    ) -> None:
        self._encoder = encoder
        self._limits = limits
        self._observe = observe
        self._abort = threading.Event()
        tokenize_in: queue.Queue = queue.Queue(tokenize_depth)
        self._tokenized: queue.Queue = queue.Queue()
        self._forward_in: queue.Queue = queue.Queue(replicas)
        publish_in: queue.Queue = queue.Queue(replicas + 1)
        self._published: queue.Queue = queue.Queue()
        self._tokenize_in = tokenize_in
        on_start = getattr(encoder, "bind_thread", None)
        self._output = (
            threading.Event()
        )  # something came back to the main loop, the model has room, or a stage failed
        self._stages = [
            Stage(
                "tokenize",
                self._tokenize,
                tokenize_in,
                self._tokenized,
                self._abort,
                on_output=self._output.set,
            ).start(),
            Stage(
                "forward",
                lambda b: forward(encoder, b),
                self._forward_in,
                publish_in,
                self._abort,
                threads=replicas,
                on_start=on_start,
                on_take=self._output.set,
            ).start(),  # room for the next batch: the main loop hands it over at once
            Stage(
                "publish",
                sender.publish,
                publish_in,
                self._published,
                self._abort,
                on_output=self._output.set,
            ).start(),
        ]
        self.tokenizing = 0  # submitted to tokenize, not yet drained
        self.encoding = 0  # dispatched to forward, not yet drained from publish

    # -- stage functions (on stage threads) ---------------------------------------------------

    def _tokenize(self, item: Tokenized) -> Tokenized:
        docs, arrived = item
        started = time.monotonic()
        rows = prepare(self._encoder, docs, self._limits)
        self._observe("tokenize", time.monotonic() - started)
        return rows, arrived

    # -- the main loop's side -----------------------------------------------------------------

    def has_room(self) -> bool:
        """Whether another poll's documents can be handed to the tokenizer without waiting."""
        return not self._tokenize_in.full()

    def tokenize(self, docs: list[Document], arrived: float) -> None:
        if offer(self._tokenize_in, (docs, arrived), self._abort):
            self.tokenizing += 1
        self.check()

    def tokenized(self) -> list[Tokenized]:
        items = drain(self._tokenized)
        self.tokenizing -= len(items)
        return items

    def room(self) -> int:
        """Batches the forward stage would take now (one per replica beyond those running)."""
        return self._forward_in.maxsize - self._forward_in.qsize()

    def dispatch(self, batch: Batch) -> bool:
        """Hand a batch to the forward stage; False (keep it) if its queue is full."""
        try:
            self._forward_in.put_nowait(batch)
        except queue.Full:
            return False
        self.encoding += 1
        return True

    def published(self) -> list[Sent]:
        items = drain(self._published)
        self.encoding -= len(items)
        return items

    def wait(self, timeout_s: float) -> None:
        """Block until a stage hands something back to the main loop, the forward stage takes a
        batch (room for the next), or ``timeout_s`` passes."""
        self._output.wait(timeout_s)
        self._output.clear()

    def forward_busy_since(self) -> float | None:
        """When the oldest batch now in the model was taken up, or None (``Health.live`` watches it)."""
        return self._stages[1].busy_since()

    @property
    def busy(self) -> bool:
        return bool(self.tokenizing or self.encoding)

    def check(self) -> None:
        for stage in self._stages:
            stage.check()

    def close(self, grace: Deadline) -> bool:
        """Let queued work through until ``grace`` runs out, then stop every thread.

        True if everything finished in time; the caller drains ``published()`` afterwards."""
        finished = True
        for stage in self._stages:
            stage.close(grace)
            finished = stage.join(grace) and finished
        self._abort.set()
        return finished
