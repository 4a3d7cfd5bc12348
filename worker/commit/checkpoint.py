"""The checkpoint: what was sent, what the broker acknowledged, and what may be committed.

Each document that leaves the worker (vector, delete event, dead letter) is one ``Delivery``: its
source offset and how many of its messages are still unacknowledged. The producer's delivery
callbacks (any thread) only append to a queue; the main loop drains it (``resolve``), so nothing
scans the deliveries in flight. An acknowledged dead letter finishes its offset in the watermark
tracker at once; a document's output (``mark``) finishes it once the commit strategy has settled
its dedup mark (``finish``); a failed one raises ``PublishError`` and nothing past it is ever
committed.

Deliveries carry their partition's *epoch*: a partition that is revoked, lost or read again gets a
new one, and whatever of the old epoch is still in flight is ignored when it resolves, so a revoked
partition leaves nothing behind (no offsets, no dedup marks, no rewinds).

The commit strategies (``commit.strategy``) decide when and how offsets are committed; both run the
same steps: flush the producer, resolve every delivery, then commit the watermarks that moved.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from worker.commit.watermark import OffsetTracker
from worker.consume.decode import Document, Source
from worker.errors import PublishError, TransportError

log = logging.getLogger(__name__)
FLUSH_SLICE_S = 0.5  # longest one checkpoint blocks the loop waiting for acknowledgements
TopicPartitionKey = tuple[str, int]


class Delivery:
    """The messages of one document (or dead letter) on their way to the broker."""

    __slots__ = ("_outcomes", "doc", "epoch", "mark", "pending", "registered", "source", "tp")

    def __init__(
        self, source: Source, doc: Document | None, mark: bool, epoch: int, outcomes: deque
    ) -> None:
        self.source = source
        self.tp: TopicPartitionKey = (source.topic, source.partition)
        self.doc = doc  # the document whose output this is (None for undecodable input)
        self.mark = mark  # record in dedup once acknowledged (False for dead letters)
        self.pending = 0  # messages not yet acknowledged: set before the first is produced
        self.epoch = epoch
        self.registered = False  # handed back to the main loop (``Checkpoint.add``)
        self._outcomes = outcomes

    def on_delivery(self, error: object = None, _message: object = None) -> None:
        """The producer's callback for each message: recorded, resolved on the main thread."""
        self._outcomes.append((self, error))


@dataclass
class CommitStats:
    commits: int = 0
    failures: int = 0
    last_latency_s: float = 0.0
    committed: dict[TopicPartitionKey, int] = field(default_factory=dict)


class Checkpoint:
    def __init__(
        self, producer, tracker: OffsetTracker, *, flush_timeout_s: float, metrics=None
    ) -> None:
        self._producer = producer
        self._tracker = tracker
        self._flush_timeout_s = flush_timeout_s
        self._metrics = metrics
        self._outcomes: deque = deque()
        self._early: list[
            Delivery
        ] = []  # acknowledged whole before ``add``: returned by the next ``resolve``
        self._epochs: dict[TopicPartitionKey, int] = {}
        self._unacked: Counter[TopicPartitionKey] = (
            Counter()
        )  # registered deliveries not yet acknowledged
        self._progress_at = (
            time.monotonic()
        )  # last time an acknowledgement came in, or nothing was waiting
        self._failure: tuple[TopicPartitionKey, PublishError] | None = (
            None  # the first failed send, raised by check()
        )
        self.stats = CommitStats()

    # -- deliveries ----------------------------------------------------------------------------

    def epoch(self, tp: TopicPartitionKey) -> int:
        return self._epochs.get(tp, 0)

    def delivery(self, source: Source, doc: Document | None, mark: bool = True) -> Delivery:
        """A new delivery for ``source`` (any thread), of the epoch its document was taken in;
        set ``pending`` before producing."""
        epoch = (
            doc.epoch if doc is not None else self._epochs.get((source.topic, source.partition), 0)
        )
        return Delivery(source, doc, mark, epoch, self._outcomes)

    def add(self, d: Delivery) -> None:
        """The main loop takes charge of a delivery produced elsewhere (or just now). One
        acknowledged whole already (its outcomes resolved before it was handed over) comes back
        from the next ``resolve``, with the others."""
        if d.epoch != self._epochs.get(d.tp, 0):
            return
        d.registered = True
        if d.pending > 0:
            self._unacked[d.tp] += 1
            return
        if not d.mark:
            self._tracker.finish(d.tp, d.source.offset)
        self._early.append(d)

    def resolve(self) -> list[Delivery]:
        """Apply the delivery outcomes received so far; returns the deliveries now acknowledged
        whole (those with ``mark`` still to be finished). A failed send (of a partition's current epoch) is kept for ``check`` to raise, so
        the acknowledgements that came with it are not lost."""
        acked, self._early = self._early, []
        outcomes, epochs = self._outcomes, self._epochs
        while outcomes:
            d, error = outcomes.popleft()
            if d.epoch != epochs.get(d.tp, 0):
                continue  # its partition was revoked or read again meanwhile
            if error is not None:
                if self._failure is None:
                    self._failure = (
                        d.tp,
                        PublishError(f"publishing the output of {d.source} failed: {error}"),
                    )
                    if isinstance(error, BaseException):
                        self._failure[1].__cause__ = error
                continue
            d.pending -= 1
            self._progress_at = time.monotonic()
            if d.pending == 0 and d.registered:  # an unregistered one is taken by ``add``
                acked.append(d)
                self._unacked[d.tp] -= 1
                if not d.mark:
                    self._tracker.finish(d.tp, d.source.offset)
        return acked

    def current(self, deliveries: list[Delivery]) -> list[Delivery]:
        """Those of the partitions' current epochs (not revoked or read again since)."""
        epochs = self._epochs
        return [d for d in deliveries if d.epoch == epochs.get(d.tp, 0)]

    def finish(self, deliveries: list[Delivery]) -> None:
        """Settled outputs (acknowledged, their dedup marks written): their offsets may be committed."""
        finish = self._tracker.finish
        for d in self.current(deliveries):
            finish(d.tp, d.source.offset)

    def check(self) -> None:
        """Raise the first failed send (``PublishError``): nothing past it may be committed."""
        if self._failure is not None:
            _, exc = self._failure
            self._failure = None
            raise exc

    def unacked(self) -> int:
        return sum(self._unacked.values())

    # -- the steps every commit shares -----------------------------------------------------------

    def flush(self) -> list[Delivery]:
        """1. flush the producer, for at most ``FLUSH_SLICE_S`` (the loop must go on consuming, or
        the group evicts it); 2. resolve every delivery. Raises ``PublishError`` if a send failed,
        or if deliveries have waited with no acknowledgement at all for the flush timeout (the
        broker is away). Returns the deliveries acknowledged on the way; what is still unacknowledged
        simply keeps its offsets back."""
        try:
            self._producer.flush(min(self._flush_timeout_s, FLUSH_SLICE_S))
        except TransportError:
            pass  # still waiting: judged below by how long nothing has been acknowledged
        acked = self.resolve()
        self.check()
        waiting = self.unacked()
        if not waiting:
            self._progress_at = time.monotonic()
        elif time.monotonic() - self._progress_at > self._flush_timeout_s:
            raise PublishError(
                f"the broker acknowledged none of {waiting} deliveries within {self._flush_timeout_s:.0f} s"
            )
        return acked

    def moved(self, owned: set[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        """The committable offset of every owned partition whose last successful commit differs."""
        committed = self.stats.committed
        return {
            tp: off
            for tp, off in self._tracker.committable().items()
            if tp in owned and committed.get(tp) != off
        }

    def succeeded(self, offsets: dict[TopicPartitionKey, int], started: float) -> None:
        self.stats.commits += 1
        self.stats.last_latency_s = time.monotonic() - started
        self.stats.committed.update(offsets)
        if self._metrics is not None:
            self._metrics.commit_seconds.observe(self.stats.last_latency_s)

    def failed(self) -> None:
        self.stats.failures += 1
        if self._metrics is not None:
            self._metrics.commit_failures.inc()

    # -- partitions leaving or read again --------------------------------------------------------

    def forget(self, tps: set[TopicPartitionKey]) -> None:
        """A new epoch for these partitions: their deliveries in flight, finished offsets and
        last commits are forgotten; the tracker drops them."""
        if self._failure is not None and self._failure[0] in tps:
            self._failure = None  # nothing of that partition is ours to redo any more
        self._early = [d for d in self._early if d.tp not in tps]
        for tp in tps:
            self._epochs[tp] = self._epochs.get(tp, 0) + 1
            self._unacked.pop(tp, None)
            self.stats.committed.pop(tp, None)
        self._tracker.forget(tps)
