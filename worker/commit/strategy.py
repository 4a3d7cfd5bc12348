"""Commit strategies: how finished work becomes committed, and what a rebalance does to it.

The loop calls the same verbs whichever guarantee is configured:

- ``settle(acked)``: deliveries just acknowledged; returns those whose per-key hold may go;
- ``already_embedded(docs)``: the dedup view of these upserts;
- ``commit()``: the checkpoint, in numbered steps;
- ``on_revoke(tps)`` / ``on_lost(tps)``: before partitions leave;
- ``abort()``: after a failure, before everything since the last commit is read again.

``AtLeastOnce``: 1. flush the producer; 2. resolve every delivery (a failure raises
``PublishError``: nothing is committed); 3. mark acknowledged upserts (and clear deleted ids) in
dedup; only once that is written do their offsets finish and their keys go; 4. commit,
synchronously, the watermark of every owned partition that moved. Marks that could not be written
(Redis down) are retried at every step 3 (the store's backoff paces it): until then their offsets and
keys stay held, so nothing past them is committed and no later version of their ids is looked up
against the old mark, and consumption goes on only up to ``MAX_PENDING``. On revoke (while the
partitions are still ours, with confluent-kafka) the finished work of the leaving partitions is
committed within a budget.

``Transactional`` (exactly-once): outputs go into an open Kafka transaction; the loop lets everything
polled through first (``needs_drain``), so the transaction holds exactly the outputs of the offsets it
commits. Then the marks of every id it holds are cleared, ``commit_transaction`` runs with those
offsets, and only then are the new marks written (a mark that fails now only costs a re-embedding:
no old one is left). If the marks cannot be cleared, the transaction is not committed: ``commit``
raises ``DedupError`` and the loop aborts it and waits for Redis. Until the commit the open
transaction's acknowledged outputs stay in view (``already_embedded`` reads them before Redis), so a
later version of an id is never skipped against a mark the transaction is about to replace.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from worker.commit.checkpoint import Checkpoint, Delivery
from worker.consume.decode import Document
from worker.deadline import Backoff, Deadline
from worker.errors import CommitRejectedError, DedupError, PublishError, TransportError

log = logging.getLogger(__name__)
TopicPartitionKey = tuple[str, int]


class AtLeastOnce:
    needs_drain = False

    def __init__(
        self, consumer, producer, checkpoint: Checkpoint, dedup, *, revoke_budget_s: float
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self._checkpoint = checkpoint
        self._dedup = dedup
        self._revoke_budget_s = revoke_budget_s
        self._unmarked: list[
            Delivery
        ] = []  # acknowledged outputs whose marks are still to be written

    @property
    def unmarked(self) -> int:
        """Acknowledged outputs held back until their dedup marks are written."""
        return len(self._unmarked)

    def already_embedded(self, docs: Sequence[Document]) -> list[bool]:
        return self._dedup.already_embedded(docs)

    def settle(self, acked: list[Delivery]) -> list[Delivery]:
        """3. Mark what the broker acknowledged, with what is still unmarked (one round trip);
        returns the deliveries settled: their offsets are finished and their keys may go. Dead
        letters settle at once (they change no mark: the id's last output is what it was)."""
        if not acked and not self._unmarked:
            return acked
        settled = [d for d in acked if not d.mark]
        if len(settled) < len(acked):
            self._unmarked += [d for d in acked if d.mark]
        if self._unmarked and not self._dedup.waiting():  # while Redis backs off, nothing is tried
            waiting = self._checkpoint.current(
                self._unmarked
            )  # a revoked partition's are the next owner's to redo
            if not waiting or self._dedup.mark([d.doc for d in waiting]):
                self._checkpoint.finish(waiting)
                settled += waiting
                waiting = []
            self._unmarked = waiting
        return settled

    def commit(self) -> list[Delivery]:
        """Steps 1-4; returns the deliveries acknowledged on the way (settled)."""
        released = self.settle(self._checkpoint.flush())
        self._commit(self._checkpoint.moved(self._consumer.assignment()))
        return released

    def _commit(self, offsets: dict[TopicPartitionKey, int]) -> bool:
        if not offsets:
            return True
        started = time.monotonic()
        try:
            self._consumer.commit(offsets)
        except CommitRejectedError as exc:  # the new owner reads from the last commit
            self._checkpoint.failed()
            log.warning(
                "commit rejected by a rebalance; partitions will be read again from the last commit: %s",
                exc,
            )
            return False
        except (
            TransportError
        ) as exc:  # outcome unknown (e.g. a timeout): retried at the next checkpoint
            self._checkpoint.failed()
            log.warning("commit outcome unknown, retrying at the next checkpoint: %s", exc)
            return False
        self._checkpoint.succeeded(offsets, started)
        return True

    def on_revoke(self, tps: set[TopicPartitionKey]) -> list[Delivery]:
        """Commit the leaving partitions' finished work while they are still ours (within the
        budget); returns what was acknowledged on the way. Unfinished work is left to the next owner."""
        if not self._consumer.commits_on_revoke:
            return []
        budget = Deadline(self._revoke_budget_s)
        try:
            self._producer.flush(budget.remaining())
        except TransportError:
            pass  # what is acknowledged by now is committed; the rest is redone by the next owner
        released = self.settle(
            self._checkpoint.resolve()
        )  # a failed send is raised by the loop afterwards
        moved = self._checkpoint.moved(tps)
        if moved and self._commit(moved):
            log.info("committed the finished work of %d revoked partitions", len(moved))
        return released

    def on_lost(self, tps: set[TopicPartitionKey]) -> None:
        """Lost partitions are someone else's already: nothing of theirs is committed."""

    def abort(self) -> None:
        """Nothing to abort: unacknowledged work is read again from the last commit."""


class Transactional(AtLeastOnce):
    needs_drain = True

    def __init__(
        self,
        consumer,
        producer,
        checkpoint: Checkpoint,
        dedup,
        *,
        revoke_budget_s: float,
        stop=None,
    ) -> None:
        super().__init__(consumer, producer, checkpoint, dedup, revoke_budget_s=revoke_budget_s)
        self._open: dict[
            str, Document
        ] = {}  # id -> its last acknowledged output in the open transaction
        self._stop = stop
        self._backoff = Backoff(0.5, 30.0)

    def already_embedded(self, docs: Sequence[Document]) -> list[bool]:
        seen = self._open
        if not seen:
            return self._dedup.already_embedded(docs)
        rest = [d for d in docs if d.id not in seen]
        answers = iter(self._dedup.already_embedded(rest))
        out = []
        for d in docs:
            last = seen.get(d.id)
            out.append(
                next(answers)
                if last is None
                else (last.op == "upsert" and last.dedup_value == d.dedup_value)
            )
        return out

    def settle(self, acked: list[Delivery]) -> list[Delivery]:
        """Marks wait for the transaction; offsets and keys may go now (its outputs stay in view)."""
        marked = [d for d in acked if d.mark]
        for d in marked:
            assert d.doc is not None  # only a document's delivery is marked, never a dead letter
            self._open[d.doc.id] = d.doc
        self._checkpoint.finish(marked)
        return acked

    def commit(self) -> list[Delivery]:
        """Call only when drained: everything polled has been handed to the producer. Commits
        only once every output is acknowledged (else the loop keeps draining and calls again)."""
        released = self.settle(self._checkpoint.flush())
        if self._checkpoint.unacked():
            return released
        offsets = self._checkpoint.moved(self._consumer.assignment())
        if not offsets and not self._open:
            return released
        replaced = list(self._open.values())
        if not self._dedup.clear(
            replaced
        ):  # an old mark outliving this commit could skip a later version
            raise DedupError(
                f"exactly-once: the dedup marks of {len(replaced)} documents could not be cleared before the commit"
            )
        started = time.monotonic()
        try:
            self._producer.commit_transaction(offsets, self._consumer.group_metadata())
        except (
            TransportError
        ) as exc:  # the transaction is aborted and its work redone: nothing is committed
            self._checkpoint.failed()
            raise PublishError(f"committing the transaction failed: {exc}") from exc
        self._dedup.mark(replaced)  # cleared already: one not written now only costs a re-embedding
        self._open = {}
        self._checkpoint.succeeded(offsets, started)
        return released

    def on_revoke(self, tps: set[TopicPartitionKey]) -> list[Delivery]:
        """The open transaction may hold their outputs: the loop aborts it and redoes the rest."""
        return []

    def abort(self) -> None:
        """Discard the open transaction (with retries while the broker is away)."""
        self._open = {}
        for attempt in range(8):
            try:
                self._producer.abort_transaction()
                self._backoff.succeeded()
                return
            except TransportError as exc:
                if (
                    attempt == 7
                    or not exc.retriable
                    or (self._stop is not None and self._stop.is_set())
                ):
                    raise PublishError(
                        f"exactly-once: aborting the transaction failed: {exc}"
                    ) from exc
                delay = self._backoff.failed()
                if self._stop is not None:
                    self._stop.wait(delay)
                else:
                    time.sleep(delay)
