"""The checkpoint: nothing is committed that the broker has not acknowledged.

Each document that leaves the worker (vector, delete event, dead letter) is a ``Delivery``: its
source offset and the send futures of its messages. ``commit()`` runs in numbered steps:

1. flush the producer, so every send is acknowledged or failed;
2. resolve the deliveries: a failed send raises ``PublishError`` and nothing is committed;
   acknowledged ones finish their offsets in the watermark tracker;
3. mark acknowledged upserts (and clear deleted ids) in the dedup store;
4. commit, synchronously, the watermark of every partition still owned that moved.

With a transactional publisher (exactly-once) step 4 is ``commit_transaction`` with the offsets,
and step 3 waits for it: a dedup mark for an output that could still be aborted would skip a
document whose vector no reader ever sees. The worker drains its pipeline before such a commit, so
the transaction holds exactly the outputs of the offsets it commits.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from kafka.errors import CommitFailedError, KafkaError, KafkaTimeoutError
from kafka.producer.future import FutureRecordMetadata

from worker.commit.watermark import OffsetTracker
from worker.consume.decode import Document, Source
from worker.errors import PublishError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Delivery:
    source: Source
    futures: list[FutureRecordMetadata]
    doc: Document | None = None  # the document whose output this is (None for undecodable input)
    mark: bool = True  # record in dedup once acknowledged (False for dead letters)

    @property
    def tp(self) -> tuple[str, int]:
        return (self.source.topic, self.source.partition)


@dataclass
class CommitStats:
    commits: int = 0
    failures: int = 0
    last_latency_s: float = 0.0
    committed: dict[tuple[str, int], int] = field(default_factory=dict)


class Checkpoint:
    def __init__(self, intake, publisher, tracker: OffsetTracker, dedup, *, flush_timeout_s: float, metrics=None) -> None:
        self._intake = intake
        self._publisher = publisher
        self._tracker = tracker
        self._dedup = dedup
        self._flush_timeout_s = flush_timeout_s
        self._inflight: list[Delivery] = []
        self._transactional = getattr(publisher, "transactional", False)
        self._unmarked: list[Document] = []  # acknowledged in the open transaction, marked once it commits
        self._metrics = metrics
        self.stats = CommitStats()

    def add(self, delivery: Delivery) -> None:
        self._inflight.append(delivery)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def resolve(self, *, all_sent: bool = False) -> list[Delivery]:
        """Finish acknowledged deliveries; raise on a failed one. Returns the acknowledged ones.

        Without ``all_sent`` only deliveries whose sends have completed are looked at (no waiting)."""
        acked, waiting = [], []
        for d in self._inflight:
            if not all(f.is_done for f in d.futures):
                if all_sent:
                    raise PublishError(f"a send for {d.source} was not acknowledged within the flush timeout")
                waiting.append(d)
                continue
            failed = next((f for f in d.futures if f.failed()), None)
            if failed is not None:
                raise PublishError(f"publishing the output of {d.source} failed: {failed.exception!r}") from failed.exception
            acked.append(d)
        self._inflight = waiting
        for d in acked:
            self._tracker.finish(d.tp, d.source.offset)
        docs = [d.doc for d in acked if d.doc is not None and d.mark]
        if self._transactional:
            self._unmarked.extend(docs)
        else:
            self._dedup.mark(docs)
        return acked

    def commit(self) -> list[Delivery]:
        """Steps 1–4 above. Returns the deliveries acknowledged on the way."""
        started = time.monotonic()
        try:
            return self._commit()
        finally:
            if self._metrics is not None:
                self._metrics.stage_seconds.labels(stage="commit").observe(time.monotonic() - started)

    def _commit(self) -> list[Delivery]:
        # 1. flush: every send so far is acknowledged or failed
        try:
            self._publisher.flush(self._flush_timeout_s)
        except KafkaTimeoutError as exc:
            raise PublishError(f"the broker did not acknowledge published messages within {self._flush_timeout_s:.0f} s") from exc
        # 2 and 3. resolve deliveries (raises PublishError on any failure), mark dedup
        acked = self.resolve(all_sent=True)
        # 4. commit what moved, for partitions still owned
        offsets = self._moved()
        if self._transactional:
            return self._commit_transaction(offsets, acked)
        if not offsets:
            return acked
        started = time.monotonic()
        try:
            self._intake.commit(offsets)
        except CommitFailedError as exc:
            # the group rebalanced under us: the new owner re-reads from the last commit (at-least-once)
            self._failed()
            log.warning("commit rejected by a rebalance; partitions will be re-read from the last commit: %s", exc)
            return acked
        except KafkaError as exc:
            # outcome unknown (e.g. timeout): retried at the next checkpoint with fresh offsets
            self._failed()
            log.warning("commit outcome unknown, retrying at the next checkpoint: %r", exc)
            return acked
        self._succeeded(offsets, started)
        return acked

    def _commit_transaction(self, offsets: dict[tuple[str, int], int], acked: list[Delivery]) -> list[Delivery]:
        if not offsets and not self._unmarked:
            return acked
        started = time.monotonic()
        try:
            self._publisher.commit_transaction(offsets, self._intake.group_metadata())
        except KafkaError as exc:  # the transaction is aborted and its work redone: nothing is committed
            self._failed()
            raise PublishError(f"committing the transaction failed: {exc!r}") from exc
        self._dedup.mark(self._unmarked)
        self._unmarked = []
        self._succeeded(offsets, started)
        return acked

    def _moved(self) -> dict[tuple[str, int], int]:
        """The committable offset of every owned partition whose last successful commit differs."""
        owned = self._intake.assignment()
        return {tp: off for tp, off in self._tracker.committable().items() if tp in owned and self.stats.committed.get(tp) != off}

    def _succeeded(self, offsets: dict[tuple[str, int], int], started: float) -> None:
        self.stats.commits += 1
        self.stats.last_latency_s = time.monotonic() - started
        self.stats.committed.update(offsets)
        if self._metrics is not None:
            self._metrics.commit_seconds.observe(self.stats.last_latency_s)

    def _failed(self) -> None:
        self.stats.failures += 1
        if self._metrics is not None:
            self._metrics.commit_failures.inc()

    def uncommitted(self) -> bool:
        """Whether an owned partition has finished work beyond its last successful commit."""
        return bool(self._moved())

    def drop_unresolved(self) -> None:
        """After a publish failure: forget every delivery not yet resolved (failed or pending).
        Their offsets stay unfinished, so nothing past them is committed; they are read again."""
        self._inflight = []
        self._unmarked = []  # outputs of an aborted transaction: never to be marked

    def forget(self, tps: set[tuple[str, int]]) -> None:
        for tp in tps:
            self.stats.committed.pop(tp, None)
