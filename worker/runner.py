"""The main loop, on one thread: the only one that touches the Kafka consumer. Start reading at
``Worker.run``. The data flow and who owns each part are described once, in docs/architecture.md.

This module owns the loop and the rebalance lifecycle (``on_assigned``/``on_revoked``/``on_lost``,
called by the consumer inside ``consume``, on this thread). Everything per document is done a poll
or a batch at a time, and nothing per loop iteration scans all waiting or all in-flight documents.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from worker.batch.policy import BatchLimits, default_max_tokens
from worker.batch.waiting import Batch, WaitingRoom
from worker.commit.checkpoint import Checkpoint, Delivery
from worker.commit.strategy import AtLeastOnce, Transactional
from worker.commit.watermark import OffsetTracker
from worker.config import Settings
from worker.consume.decode import Document, Rejection, reject_document
from worker.consume.formats import decoder_for
from worker.deadline import Backoff, Deadline
from worker.encode.base import Encoder
from worker.encode.chunking import TextLimits
from worker.errors import DedupError, PublishError, StageError, TransportError
from worker.observe.health import Health
from worker.observe.metrics import Metrics, observe_many
from worker.observe.progress import Progress, record_sent
from worker.order import KeyGate
from worker.pipeline import Pipeline
from worker.publish.sender import Sender, Sent
from worker.stats import RunStats

__all__ = ["RunStats", "Worker"]

log = logging.getLogger(__name__)
TopicPartitionKey = tuple[str, int]
TICK_S = 0.01  # longest wait while the pipeline works: how soon a result it does not announce is picked up
PAUSE_AFTER_S = (
    0.5  # a hold for room shorter than this skips polling instead of pausing (``Worker._poll``)
)
_HOLD, _ROOM = 1, 2  # why consumption waits (``Worker._must_hold``)


class Worker:
    def __init__(
        self,
        settings: Settings,
        encoder: Encoder,
        consumer,
        producer,
        dedup,
        stop: threading.Event | None = None,
        metrics: Metrics | None = None,
        health: Health | None = None,
    ) -> None:
        self._s = settings
        self._decode = decoder_for(settings.input, allow_null_keys=settings.kafka.allow_null_keys)
        self._consumer = consumer
        self._producer = producer
        self._dedup = dedup
        self._stop = stop or threading.Event()
        self._m = metrics or Metrics()
        self._health = health or Health(settings.metrics.stall_after_s)
        self._eos = settings.kafka.exactly_once
        self._tracker = OffsetTracker()
        self._checkpoint = Checkpoint(
            producer,
            self._tracker,
            flush_timeout_s=settings.kafka.request_timeout_ms / 1000 * 2,
            metrics=self._m,
        )
        budget = self._revoke_budget_s = (
            0.2 * settings.kafka.max_poll_interval_ms / 1000
        )  # finish a revocation well inside the poll interval
        if self._eos:
            self._strategy: AtLeastOnce = Transactional(
                consumer, producer, self._checkpoint, dedup, revoke_budget_s=budget, stop=self._stop
            )
        else:
            self._strategy = AtLeastOnce(
                consumer, producer, self._checkpoint, dedup, revoke_budget_s=budget
            )
        b = settings.batch
        max_tokens = b.max_tokens or default_max_tokens(
            encoder.info.device.split(":")[0], encoder.info.max_length
        )
        self._waiting = WaitingRoom(
            BatchLimits(max_tokens, b.max_size, b.max_wait_ms / 1000, b.overhead_tokens)
        )
        self._gate = KeyGate()
        self._unscreened: deque[tuple[list[Document], float]] = (
            deque()
        )  # admitted, awaiting the dedup lookup
        self._ready: deque[Batch] = deque()  # cut, waiting for room in the forward stage
        self._sender = Sender(producer, self._checkpoint, encoder.info, settings)
        stage_seconds = self._m.stage_seconds
        limits = TextLimits.build(
            settings.long_text, encoder.info.max_length, getattr(encoder, "specials", 0)
        )
        self._replicas = encoder.replicas  # resolved from EMBED_MODEL__REPLICAS and the cores
        self._pipeline = Pipeline(
            encoder,
            self._sender,
            limits,
            replicas=self._replicas,
            observe=lambda stage, s: stage_seconds.labels(stage=stage).observe(s),
        )
        self._health.watch_forward(self._pipeline.forward_busy_since)
        self._to_rewind: set[TopicPartitionKey] = (
            set()
        )  # owned partitions to read again from their commit
        self._fenced: set[TopicPartitionKey] = (
            set()
        )  # dropped or rewound during the current consume call
        self._starts: dict[
            TopicPartitionKey, int
        ] = {}  # first offset taken in since assignment: where a rewind goes with no commit
        self._closed = False
        self._backoff = Backoff(
            0.5, 30.0
        )  # after a publish failure or a broker that does not answer
        self._rebalances = 0
        self._departures = 0  # revocations and losses
        self._rewinds = 0
        self._draining = (
            False  # exactly-once: consumption paused until everything polled is out, then commit
        )
        self._lookups_fail = False  # the last dedup lookup failed (Redis down, fail-closed)
        self._redis_hold = False  # exactly-once: a transaction was aborted for Redis; consumption waits out its backoff
        self._room_since: float | None = None  # since when consumption waits for room
        self._progress = Progress(
            self._m, consumer, encoder, dedup, settings.log_interval_s, lambda: self._rebalances
        )
        self.stats = RunStats(replicas=self._replicas)
        consumer.subscribe(self)

    # -- the loop ------------------------------------------------------------------------------

    def run(self, exit_when_idle_s: float | None = None) -> RunStats:
        commit_every = self._s.kafka.commit_interval_ms / 1000
        next_commit = Deadline(commit_every)
        idle = _IdleClock()
        try:
            stopping: Deadline | None = None
            while True:
                if (
                    self._stop.is_set()
                ):  # exactly-once: finish what was polled (within the grace), then commit it
                    stopping = stopping or Deadline(self._s.shutdown_grace_s)
                    if not self._strategy.needs_drain or self._drained() or stopping.expired():
                        break
                    self._draining = True
                try:
                    self._pipeline.check()
                    records, held = self._poll(next_commit)  # rebalances are handled in here
                    self._health.polled()
                    self._m.last_poll.set(time.time())
                    idle.saw(
                        bool(records) or held,
                        (self._rebalances, self._departures, self._rewinds),
                        bool(self._consumer.assignment()),
                    )
                    self._take_in(records)
                    self._screen()
                    self._advance()
                    if next_commit.expired():
                        if self._strategy.needs_drain and not self._drained():
                            if self._lookups_fail:  # the drain cannot finish while Redis is down: keep the transaction short
                                self._wait_for_redis("documents wait for a dedup lookup")
                                next_commit = Deadline(commit_every)
                            else:
                                self._draining = True  # the transaction must hold exactly the outputs of the offsets it commits
                            continue
                        try:
                            self._commit()
                        except DedupError as exc:  # exactly-once: the marks the transaction replaces could not be cleared
                            self._wait_for_redis(str(exc))
                        next_commit = Deadline(commit_every)
                        if (
                            exit_when_idle_s is not None
                            and self._idle()
                            and idle.seconds() >= exit_when_idle_s
                        ):
                            log.info(
                                "no message for %.1f s and nothing in flight: exiting",
                                exit_when_idle_s,
                            )
                            break
                except PublishError as exc:
                    self._publish_failed(exc)
                    next_commit = Deadline(commit_every)
        finally:
            self._shutdown()
        return self.stats

    def _consume(self, timeout_s: float) -> list:
        """One consume call; records of partitions dropped or rewound while it ran are left out
        (they were read from a position that no longer counts)."""
        self._rewind()
        self._fenced = set()
        records = self._consumer.consume(self._s.kafka.max_poll_records, timeout_s)
        skip = self._fenced | self._to_rewind
        if skip and records:
            records = [r for r in records if (r[0], r[1]) not in skip]
        return records

    def _commit(self) -> None:
        self._draining = False
        started = time.monotonic()
        try:
            self._release(self._strategy.commit())
        finally:
            self._m.stage_seconds.labels(stage="commit").observe(time.monotonic() - started)
        if self._backoff.succeeded():
            log.info("the broker acknowledges again: publishing resumed")
        self._m.inflight.set(self._tracker.unfinished())
        self._m.unmarked.set(self._strategy.unmarked)
        self._progress.tick(self.stats)

    def _poll(self, next_commit: Deadline) -> tuple[list, bool]:
        """This iteration's records (none while consumption is held), and whether it is held.

        A hold for room skips polling for up to ``PAUSE_AFTER_S`` instead of pausing the
        partitions: librdkafka drops a paused partition's prefetched records, and fetching them
        again stalls intake for about half a second each time. A longer hold, or one for any other
        reason, pauses them and keeps polling, so rebalances are served. While the pipeline has
        work, the loop waits on it rather than on the broker, so a free model is fed at once."""
        hold = self._must_hold()
        now = time.monotonic()
        if hold != _ROOM:
            self._room_since = None
            skip = False
        else:
            if self._room_since is None:
                self._room_since = now
            skip = now - self._room_since < PAUSE_AFTER_S
        self._consumer.hold(bool(hold) and not skip)
        working = self._working()
        timeout = self._poll_timeout(next_commit, working)
        records = [] if skip else self._consume(0.0 if hold or working else timeout)
        if not records and (
            hold or working
        ):  # wake as soon as the pipeline hands something back or has room
            self._pipeline.wait(timeout)
        return records, bool(hold)

    def _must_hold(self) -> int:
        """Why consumption must wait, if it must: ``_ROOM`` (too much in flight, a full tokenizer
        queue), or ``_HOLD`` (documents waiting for Redis (fail-closed), partitions still to be
        rewound, a broker outage's backoff, or a drain); 0 if not."""
        if self._redis_hold:
            self._redis_hold = self._dedup.waiting()
        if (
            self._draining
            or self._unscreened
            or self._to_rewind
            or self._backoff.waiting()
            or self._redis_hold
        ):
            return _HOLD
        if self._tracker.unfinished() >= self._s.batch.max_pending or not self._pipeline.has_room():
            return _ROOM
        return 0

    def _working(self) -> bool:
        """Something in flight will come back by itself (from the pipeline or the producer)."""
        return bool(self._ready or self._pipeline.busy or self._checkpoint.unacked())

    def _drained(self) -> bool:
        """Nothing polled is still on its way to the producer."""
        return not (
            self._unscreened
            or len(self._gate)
            or len(self._waiting)
            or self._ready
            or self._pipeline.busy
        )

    def _idle(self) -> bool:
        """Nothing in flight, nothing uncommitted, partitions owned (mid-rebalance they may come back with work)."""
        if not self._drained() or self._tracker.unfinished() or self._to_rewind:
            return False
        owned = self._consumer.assignment()
        return (
            bool(owned) and self._consumer.settled() and not self._checkpoint.moved(owned)
        )  # e.g. a commit refused mid-rebalance

    def _poll_timeout(self, next_commit: Deadline, working: bool) -> float:
        """How long this iteration may wait: until the next commit, or the oldest waiting
        document's deadline when the model has room for a batch (while it has none, the next batch
        is cut when it takes one, which wakes the loop). While work is in flight, at most ``TICK_S``
        if acknowledgements are due (the producer serves them only when polled) or the waiting room
        could use more documents; a busy model with a full waiting room wakes the loop itself, and
        every wake-up meanwhile would only take CPU from it."""
        wait = min(next_commit.remaining(), 0.5)
        batch_due = (
            self._waiting.next_deadline() if self._pipeline.room() > len(self._ready) else None
        )
        if batch_due is not None:
            wait = min(wait, max(0.0, batch_due - time.monotonic()))
        if working and (
            self._checkpoint.unacked()
            or len(self._waiting) < self._s.batch.max_size * self._replicas
        ):
            wait = min(max(wait, TICK_S / 10), TICK_S)
        return wait

    # -- intake: decode, order, dedup ------------------------------------------------------------

    def _take_in(self, records: list) -> None:
        if not records:
            return
        now = time.monotonic()
        self.stats.first_message = self.stats.first_message or now
        self.stats.received += len(records)
        self._m.input_messages.inc(len(records))
        track, starts = self._tracker.track, self._starts
        for topic, partition, offset, *_ in records:
            tp = (topic, partition)
            track(tp, offset)
            if tp not in starts:
                starts[tp] = offset
        docs, rejected = self._decode(records)
        for rej in rejected:
            self._dead_letter(rej)
        epoch = self._checkpoint.epoch
        for d in docs:
            d.epoch = epoch((d.source.topic, d.source.partition))
        self._m.stage_seconds.labels(stage="decode").observe(time.monotonic() - now)
        admitted = self._gate.admit(docs)
        if admitted:
            self._unscreened.append((admitted, now))

    def _screen(self) -> None:
        """Dedup-check admitted documents, one Redis round trip per poll; with Redis down and
        fail-closed they stay here (consumption paused) until it answers."""
        while self._unscreened:
            docs, arrived = self._unscreened[0]
            upserts = [d for d in docs if d.op == "upsert"]
            try:
                hits = self._strategy.already_embedded(upserts)
            except DedupError:
                self._lookups_fail = True
                return
            self._lookups_fail = False
            self._unscreened.popleft()
            skipped = {id(d) for d, hit in zip(upserts, hits) if hit}
            if self._s.redis.enabled:
                self._m.dedup_hits.inc(len(skipped))
                self._m.dedup_misses.inc(len(upserts) - len(skipped))
            to_tokenize, done = [], []
            for d in docs:
                if id(d) in skipped:
                    self._tracker.finish((d.source.topic, d.source.partition), d.source.offset)
                    done.append(d)
                elif d.op == "delete":
                    self._register([self._sender.delete(d)])
                    self.stats.deletes += 1
                    self._m.deletes.inc()
                    self.stats.last_output = time.monotonic()
                else:
                    to_tokenize.append(d)
            self.stats.dedup_hits += len(done)
            if to_tokenize:
                self._pipeline.tokenize(to_tokenize, arrived)
            self._admit_next(done)

    # -- the pipeline: tokenized → waiting room → forward → published ---------------------------

    def _advance(self) -> None:
        for rows, arrived in self._pipeline.tokenized():
            self._wait(rows, arrived)
        # the next batch is chosen only when the model has room for it: until then documents gather
        self._ready.extend(
            self._waiting.take(self._pipeline.room() - len(self._ready), drain=self._draining)
        )
        while self._ready and self._pipeline.dispatch(self._ready[0]):
            batch = self._ready.popleft()
            self._m.stage_seconds.labels(stage="queue_wait").observe(
                time.monotonic() - batch.arrived
            )
        for sent in self._pipeline.published():
            self._collect(sent)
        self._producer.poll()
        self._release(self._strategy.settle(self._checkpoint.resolve()))
        self._checkpoint.check()

    def _wait(self, rows: list[Document], arrived: float) -> None:
        """Tokenized rows into the waiting room; a document the long-text policy rejected is
        dead-lettered; rows of partitions dropped meanwhile are left out."""
        epoch = self._checkpoint.epoch
        current = [d for d in rows if d.epoch == epoch((d.source.topic, d.source.partition))]
        for d in current:
            if d.rejected is not None:
                self._dead_letter(reject_document(d, *d.rejected), d)
        self._waiting.add((d for d in current if d.rejected is None), arrived)

    def _collect(self, sent: Sent) -> None:
        """A batch the publish stage handed to the producer: its deliveries, stats and metrics."""
        self._register(sent.deliveries)
        record_sent(self.stats, self._m, sent, sent.encoded.docs)

    def _register(self, deliveries: list[Delivery]) -> None:
        """Hand deliveries to the checkpoint; those acknowledged already come back from its next
        ``resolve`` with the rest, and are settled together (one Redis call, not one per batch)."""
        for d in deliveries:
            self._checkpoint.add(d)

    def _dead_letter(self, rej: Rejection, doc: Document | None = None) -> None:
        self._register([self._sender.dead_letter(rej, doc)])
        self.stats.dead_lettered[rej.reason] += 1
        self._m.dlq.labels(reason=rej.reason).inc()

    def _release(self, settled: list[Delivery]) -> None:
        """Documents whose output is settled: their keys go (admitting the next versions), and
        their end-to-end latency is recorded."""
        if not settled:
            return
        now_ms = time.time() * 1000
        latencies = [
            max(0.0, now_ms - d.source.timestamp_ms) / 1000
            for d in settled
            if d.mark and d.source.timestamp_ms > 0
        ]
        observe_many(self._m.end_to_end_seconds, latencies)
        self._admit_next([d.doc for d in settled if d.doc is not None])

    def _admit_next(self, done: list[Document]) -> None:
        release = self._gate.release
        admitted = [nxt for nxt in map(release, done) if nxt is not None]
        if admitted:
            self._unscreened.append((admitted, time.monotonic()))

    # -- the rebalance lifecycle (inside consume, on this thread) --------------------------------

    def on_assigned(self, tps: set[TopicPartitionKey]) -> None:
        """New partitions start from their commit (the consumer sees to it). Exactly-once: the
        group generation changed, so the open transaction is aborted and the partitions kept are
        read again from their commit too."""
        if self._closed:
            return
        self._rebalances += 1
        log.info("partitions assigned: %s", sorted(p for _, p in tps))
        self._forget(tps, fence=False)
        # Revoked and assigned back within this consume call: its records of them may come from
        # either side of the change, so they are all left out and the partitions read again.
        self._to_rewind |= tps & self._fenced
        if self._eos:
            self._restart_transaction(kept=self._consumer.assignment() - tps)

    def on_revoked(self, tps: set[TopicPartitionKey]) -> None:
        """At-least-once, with a consumer that tells before the partitions go: batches already in
        the pipeline come out and the leaving partitions' finished work is committed (within the
        revocation budget), so the next owner does not redo it. The rest is dropped uncommitted."""
        if self._closed:
            return
        log.info("partitions revoked: %s", sorted(p for _, p in tps))
        if self._consumer.commits_on_revoke and not self._eos:
            self._finish_pipeline(Deadline(self._revoke_budget_s))
            self._release(self._strategy.on_revoke(tps))
        self._leave(tps)

    def on_lost(self, tps: set[TopicPartitionKey]) -> None:
        if self._closed:
            return
        log.info("partitions lost: %s", sorted(p for _, p in tps))
        self._strategy.on_lost(tps)
        self._leave(tps)

    def _finish_pipeline(self, budget: Deadline) -> None:
        """Collect every batch already dispatched to the model, waiting for it up to ``budget``."""
        while self._pipeline.encoding and not budget.expired():
            self._pipeline.check()
            for sent in self._pipeline.published():
                self._collect(sent)
            if self._pipeline.encoding:
                time.sleep(TICK_S / 5)

    def _leave(self, tps: set[TopicPartitionKey]) -> None:
        self._departures += 1  # restarts the idle clock: under an eager protocol the partitions may come straight back
        log.info(
            "dropped %d waiting documents of partitions that left (not committed)",
            self._forget(tps),
        )
        if self._eos:  # the open transaction may hold their outputs: it must not commit them without their offsets
            self._restart_transaction(kept=self._consumer.assignment() - tps)

    def _forget(self, tps: set[TopicPartitionKey], *, fence: bool = True) -> int:
        """Drop all local state of these partitions: nothing of theirs is committed, their
        deliveries still in flight are ignored (a new epoch), and (``fence``) this consume call's
        records of them are left out. Returns how many waiting documents were dropped. Batches already in the
        pipeline finish and are published, but are not ours to commit."""
        dropped = self._waiting.drop(tps) + self._gate.drop(tps)
        unscreened, self._unscreened = self._unscreened, deque()
        for docs, arrived in unscreened:
            kept = [d for d in docs if (d.source.topic, d.source.partition) not in tps]
            dropped += len(docs) - len(kept)
            if kept:
                self._unscreened.append((kept, arrived))
        ready, self._ready = self._ready, deque()
        for b in ready:
            kept = [d for d in b.docs if (d.source.topic, d.source.partition) not in tps]
            dropped += len(b.docs) - len(kept)
            if kept:
                self._ready.append(Batch(kept, b.cut, b.arrived))
        self._checkpoint.forget(tps)
        if fence:
            self._fenced |= tps
        return dropped

    # -- failures: back off, then read again from the commit --------------------------------------

    def _publish_failed(self, exc: PublishError) -> None:
        """A send failed or was not acknowledged in time (e.g. the broker is away). Nothing of it
        was committed; every owned partition is read again from its last commit, after a backoff
        (0.5 s doubling to 30 s) during which consumption is paused."""
        delay = self._backoff.failed()
        self._m.publish_failures.inc()
        log.warning(
            "%s; reading every partition again from its last commit after %.1f s", exc, delay
        )
        if self._eos:
            self._restart_transaction(kept=self._consumer.assignment())
        else:
            self._read_again(self._consumer.assignment())
        self._stop.wait(delay)

    def _wait_for_redis(self, why: str) -> None:
        """Exactly-once with Redis down: a transaction cannot commit until the marks it replaces
        are cleared, and one left open past the broker's transaction timeout fences the producer.
        So it is aborted now (its work is redone from the commit), and consumption waits out the
        store's backoff before reading again."""
        log.warning(
            "exactly-once: Redis does not answer (%s); aborting the transaction and pausing until it does",
            why,
        )
        self._restart_transaction(kept=self._consumer.assignment())
        self._redis_hold = True

    def _read_again(self, tps: set[TopicPartitionKey]) -> None:
        self._forget(tps)
        self._to_rewind |= tps

    def _restart_transaction(self, kept: set[TopicPartitionKey]) -> None:
        """Exactly-once: abort the open transaction and redo everything since the last commit.

        The pipeline is emptied first (what it still sends lands in the aborted transaction), then
        the partitions ``kept`` are read again from their committed offset."""
        drained = Deadline(max(self._s.shutdown_grace_s, 30.0))
        while self._pipeline.busy:
            if drained.expired():
                raise StageError(
                    "exactly-once: the pipeline did not empty in time to abort the transaction"
                )
            self._pipeline.check()
            self._pipeline.tokenized()
            self._pipeline.published()
            time.sleep(TICK_S)
        self._strategy.abort()
        self._read_again(kept)
        self._draining = False
        log.info(
            "exactly-once: transaction aborted; %d partitions are read again from their commit",
            len(kept),
        )

    def _rewind(self) -> None:
        """Read the partitions to rewind again from their commit, once the backoff is over and
        every batch of the old reading has left the model: with several replicas one still on a
        slow replica could otherwise publish after the re-read's newer version of its id."""
        if not self._to_rewind or self._backoff.waiting() or self._pipeline.encoding:
            return
        try:
            self._consumer.rewind(self._to_rewind, self._starts)
        except (
            TransportError
        ) as exc:  # the broker did not answer: try again after a backoff, consumption paused
            log.warning(
                "could not read the committed offsets of %d partitions (%s); retrying in %.1f s",
                len(self._to_rewind),
                exc,
                self._backoff.failed(),
            )
            return
        self._to_rewind = set()
        self._rewinds += 1

    # -- shutdown --------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Batches in the pipeline get the grace period to be published; documents still waiting
        are abandoned uncommitted; everything acknowledged is committed."""
        self._health.stopping()
        self._m.ready.set(0)
        grace = Deadline(
            self._s.shutdown_grace_s if not self._eos else 1.0
        )  # exactly-once drained in the loop
        try:
            if not self._pipeline.close(grace):
                log.warning(
                    "in-flight batches did not finish within %.1f s (EMBED_SHUTDOWN_GRACE_S): abandoned uncommitted",
                    self._s.shutdown_grace_s,
                )
            for sent in self._pipeline.published():
                self._collect(sent)
            lists = (
                [b.docs for b in self._ready]
                + [d for d, _ in self._unscreened]
                + [d for d, _ in self._pipeline.tokenized()]
            )
            abandoned = len(self._waiting) + len(self._gate) + sum(map(len, lists))
            if abandoned:
                log.info("abandoning %d waiting documents uncommitted", abandoned)
            try:
                if self._eos and not self._drained():
                    self._strategy.abort()  # outputs above an unfinished offset must not be committed
                    log.warning(
                        "exactly-once: not drained within the grace; transaction aborted, the next owner redoes it"
                    )
                else:
                    try:
                        self._release(self._strategy.commit())
                    except (
                        DedupError
                    ) as exc:  # exactly-once, Redis down: the transaction must not commit
                        log.warning(
                            "final commit skipped: %s; aborting the transaction, the next owner redoes it",
                            exc,
                        )
                        self._strategy.abort()
            except (PublishError, TransportError) as exc:
                log.warning(
                    "final commit skipped: %s; the next owner reads from the last commit", exc
                )
            self._m.inflight.set(self._tracker.unfinished())
        finally:
            self._closed = (
                True  # closing the consumer revokes everything: nothing more to do for it
            )
            log.info("run summary: %s", self.stats.summary())


class _IdleClock:
    """How long since the last message, counted from the first assignment; partitions moving or
    read again restart it, and so does time spent with consumption paused (no message could come)."""

    def __init__(self) -> None:
        self._since: float | None = None
        self._moves: object = None

    def saw(self, records: bool, moves: object, assigned: bool) -> None:
        now = time.monotonic()
        if (
            records
            or (self._since is not None and moves != self._moves)
            or (self._since is None and assigned)
        ):
            self._since = now
        self._moves = moves

    def seconds(self) -> float:
        return 0.0 if self._since is None else time.monotonic() - self._since
