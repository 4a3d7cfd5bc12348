"""The main loop: consume → decode → dedup → (tokenize) → batch → (forward → publish) → commit.

The loop runs on one thread, the only one that touches the Kafka consumer; tokenize, forward and
publish run on the pipeline's threads (``worker.pipeline``). Per-key order: a document whose id
still has an earlier message in flight in this worker is neither dedup-checked nor published ahead
of it; it waits in the waiting room until its predecessor has been handed to the producer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque

from kafka.errors import KafkaError

from worker.batch.policy import BatchLimits, default_max_tokens
from worker.batch.waiting import Batch, InFlight, WaitingRoom
from worker.commit.checkpoint import Checkpoint, Delivery
from worker.commit.watermark import OffsetTracker
from worker.config import Settings
from worker.consume.decode import Document, Rejection, decode_record, reject_document
from worker.deadline import Backoff, Deadline
from worker.encode.base import Encoder
from worker.encode.chunking import TextLimits
from worker.errors import DedupError, PublishError, StageError
from worker.observe.health import Health
from worker.observe.metrics import Metrics
from worker.observe.progress import Progress, record_sent
from worker.pipeline import Pipeline
from worker.publish.sender import Sender, Sent
from worker.stats import RunStats

__all__ = ["RunStats", "Worker"]

log = logging.getLogger(__name__)
KeyOf = tuple[int, str]
TICK_S = 0.01  # longest poll while the pipeline works: how soon its results are picked up


class Worker:
    def __init__(
        self,
        settings: Settings,
        encoder: Encoder,
        intake,
        publisher,
        dedup,
        stop: threading.Event | None = None,
        metrics: Metrics | None = None,
        health: Health | None = None,
    ) -> None:
        self._s = settings
        self._encoder = encoder
        self._intake = intake
        self._publisher = publisher
        self._dedup = dedup
        self._stop = stop or threading.Event()
        self._m = metrics or Metrics()
        self._health = health or Health(settings.metrics.stall_after_s)
        self._tracker = OffsetTracker()
        self._checkpoint = Checkpoint(
            intake, publisher, self._tracker, dedup, flush_timeout_s=settings.kafka.request_timeout_ms / 1000 * 2, metrics=self._m
        )
        self._progress = Progress(self._m, intake, encoder, dedup, settings.log_interval_s)
        b = settings.batch
        max_tokens = b.max_tokens or default_max_tokens(encoder.info.device.split(":")[0], encoder.info.max_length)
        limits = BatchLimits(max_tokens, b.max_size, b.max_wait_ms / 1000, b.lookahead)
        self._waiting = WaitingRoom(limits)
        self._ready: deque[Batch] = deque()
        self._open_keys: Counter[KeyOf] = Counter()  # from intake until acknowledged
        self._busy_keys = InFlight()  # rows cut into a batch, not yet handed to the producer
        self._sender = Sender(publisher, encoder.info, settings)
        stage_seconds = self._m.stage_seconds
        limits = TextLimits.build(settings.long_text, encoder.info.max_length, getattr(encoder, "specials", 0))
        self._pipeline = Pipeline(
            encoder, self._sender, limits, replicas=settings.model.replicas, observe=lambda stage, s: stage_seconds.labels(stage=stage).observe(s)
        )
        self._unscreened: deque[tuple[list[Document], float]] = deque()  # decoded, awaiting the dedup lookup (Redis down, fail-closed)
        self._to_rewind: set[tuple[str, int]] = set()  # owned partitions to read again from their commit before anything else
        self._backoff = Backoff(0.5, 30.0)  # after a publish failure or a broker that does not answer
        self._rewinds = 0
        self._eos = settings.kafka.exactly_once
        self._draining = False  # exactly-once: consumption paused until everything polled is out, then commit
        self.stats = RunStats()

    # -- main loop ---------------------------------------------------------------------------

    def run(self, exit_when_idle_s: float | None = None) -> RunStats:
        commit_every = self._s.kafka.commit_interval_ms / 1000
        next_commit = Deadline(commit_every)
        last_message: float | None = None  # the idle clock starts once partitions are assigned
        rebalances = (self._intake.events.rebalances, self._rewinds)
        try:
            stopping: Deadline | None = None
            while True:
                if self._stop.is_set():  # exactly-once: finish what was polled (within the grace), then commit it
                    stopping = stopping or Deadline(self._s.shutdown_grace_s)
                    if not self._eos or self._drained() or stopping.expired():
                        break
                    self._draining = True
                try:
                    self._pipeline.check()
                    revoked = self._handle_revocations()
                    unfinished = self._tracker.unfinished()
                    self._m.inflight.set(unfinished)
                    self._intake.hold(self._must_hold(unfinished))
                    records = self._handle_assignments(self._intake.poll(self._poll_timeout(next_commit)))
                    moved = (self._intake.events.rebalances, self._rewinds)
                    if revoked or rebalances != moved:  # partitions moving or read again: not idle
                        rebalances = moved
                        last_message = time.monotonic() if last_message is not None else None
                    self._health.polled()
                    self._m.last_poll.set(time.time())
                    if records:
                        last_message = time.monotonic()
                        self._take_in(records)
                    elif last_message is None and self._intake.assignment():
                        last_message = time.monotonic()
                    self._screen_waiting()
                    for rows, arrived in self._pipeline.tokenized():
                        self._wait(rows, arrived)
                    self._queue(self._waiting.take(drain=self._draining, busy=self._busy_keys))
                    self._dispatch()
                    self._collect(self._pipeline.published())
                    self._finish(self._checkpoint.resolve())
                    if next_commit.expired() and self._eos and not self._drained():
                        self._draining = True  # the transaction must hold exactly the outputs of the offsets it commits
                    elif next_commit.expired():
                        self._draining = False
                        acked = self._checkpoint.commit()
                        self._finish(acked)
                        if acked and self._backoff.succeeded():
                            log.info("the broker acknowledges again: publishing resumed")
                        self._progress.tick(self.stats)
                        next_commit = Deadline(commit_every)
                        if exit_when_idle_s is not None and self._idle_for(last_message) >= exit_when_idle_s:
                            log.info("no message for %.1f s and nothing in flight: exiting", exit_when_idle_s)
                            break
                except PublishError as exc:
                    self._publish_failed(exc)
                    next_commit = Deadline(commit_every)
        finally:
            self._shutdown()
        return self.stats

    def _must_hold(self, unfinished: int) -> bool:
        """Pause consumption: too much in flight, a full pipeline, documents waiting for Redis
        (fail-closed), partitions still to be rewound, or a broker outage's backoff."""
        full = unfinished >= self._s.batch.max_pending or not self._pipeline.has_room()
        return full or self._draining or bool(self._unscreened) or bool(self._to_rewind) or self._backoff.waiting()

    def _drained(self) -> bool:
        """Nothing polled is still on its way to the producer."""
        return not (self._unscreened or len(self._waiting) or self._ready or self._pipeline.busy)

    def _publish_failed(self, exc: PublishError) -> None:
        """A send failed or was not acknowledged in time (e.g. the broker is away). Nothing of it
        was committed; every owned partition is read again from its last commit, after a backoff
        (0.5 s doubling to 30 s) during which consumption is paused and nothing is dropped that
        was acknowledged."""
        delay = self._backoff.failed()
        self._m.publish_failures.inc()
        log.warning("%s; reading every partition again from its last commit after %.1f s", exc, delay)
        if self._eos:
            self._restart_transaction()
        else:
            self._read_all_again()
        self._stop.wait(delay)

    def _read_all_again(self) -> set[tuple[str, int]]:
        """Forget every unresolved delivery and all state of the owned partitions, and read them
        again from their commit; returns those partitions."""
        self._checkpoint.drop_unresolved()
        owned = self._intake.assignment()
        self._forget(owned)
        self._to_rewind |= owned
        return owned

    def _restart_transaction(self) -> None:
        """Exactly-once: abort the open transaction and redo everything since the last commit.

        The pipeline is emptied first (what it still sends lands in the aborted transaction), then
        every owned partition is read again from its committed offset."""
        drained = Deadline(max(self._s.shutdown_grace_s, 30.0))
        while self._pipeline.busy:
            if drained.expired():
                raise StageError("exactly-once: the pipeline did not empty in time to abort the transaction")
            self._pipeline.check()
            self._pipeline.tokenized()
            self._pipeline.published()
            time.sleep(TICK_S)
        for attempt in range(8):
            try:
                self._publisher.abort_transaction()
                break
            except KafkaError as exc:
                if attempt == 7 or self._stop.is_set():
                    raise PublishError(f"exactly-once: aborting the transaction failed: {exc!r}") from exc
                self._stop.wait(self._backoff.failed())
        owned = self._read_all_again()
        self._busy_keys.clear()
        self._open_keys.clear()
        self._draining = False
        log.info("exactly-once: transaction aborted; %d partitions are read again from their commit", len(owned))

    def _idle_for(self, last_message: float | None) -> float:
        if last_message is None or self._ready or len(self._waiting) or self._pipeline.busy or self._tracker.unfinished():
            return 0.0
        if self._unscreened or self._to_rewind or self._checkpoint.uncommitted():  # e.g. a commit refused mid-rebalance
            return 0.0
        if not self._intake.assignment():  # mid-rebalance: the partitions coming back may hold uncommitted work
            return 0.0
        return time.monotonic() - last_message

    def _poll_timeout(self, next_commit: Deadline) -> float:
        wait = min(next_commit.remaining(), 0.5)
        batch_due = self._waiting.next_deadline()
        if batch_due is not None:
            wait = min(wait, max(0.0, batch_due - time.monotonic()))
        if self._ready or self._pipeline.busy:  # progress comes from the pipeline: look again soon
            wait = min(max(wait, TICK_S / 10), TICK_S)
        return wait

    def _shutdown(self) -> None:
        """Batches in the pipeline get the grace period to be published; documents still waiting
        are abandoned uncommitted; everything acknowledged is committed."""
        self._health.stopping()
        self._m.ready.set(0)
        grace = Deadline(self._s.shutdown_grace_s if not self._eos else 1.0)  # exactly-once drained in the loop
        try:
            if not self._pipeline.close(grace):
                log.warning("in-flight batches did not finish within %.1f s (EMBED_SHUTDOWN_GRACE_S): abandoned uncommitted", self._s.shutdown_grace_s)
            self._collect(self._pipeline.published())
            lists = [b.docs for b in self._ready] + [d for d, _ in self._unscreened] + [d for d, _ in self._pipeline.tokenized()]
            abandoned = len(self._waiting) + sum(map(len, lists))
            if abandoned:
                log.info("abandoning %d waiting documents uncommitted", abandoned)
            try:
                if self._eos and not self._drained():
                    self._publisher.abort_transaction()  # outputs above an unfinished offset must not be committed
                    log.warning("exactly-once: not drained within the grace; transaction aborted, the next owner redoes it")
                else:
                    self._finish(self._checkpoint.commit())
            except (PublishError, KafkaError) as exc:
                log.warning("final commit skipped: %s; the next owner reads from the last commit", exc)
            self._m.inflight.set(self._tracker.unfinished())
        finally:
            log.info("run summary: %s", self.stats.summary())

    def _handle_revocations(self) -> bool:
        revoked = self._intake.events.take_revoked()
        if not revoked:
            return False
        log.info("dropped %d waiting documents of revoked partitions (not committed)", self._forget(revoked))
        if self._eos:  # the open transaction may hold their outputs: it must not commit them without their offsets
            self._restart_transaction()
        return True

    def _handle_assignments(self, records: list) -> list:
        """Start every newly assigned partition from its committed offset.

        kafka-python keeps its in-memory position for a partition revoked and assigned back, which
        would skip the work dropped at the revocation; so positions are reset from the group's
        commit, and this poll's records of those partitions (read from the old position) are
        dropped uncommitted, to be read again."""
        assigned = self._intake.events.take_assigned()
        if assigned:
            self._forget(assigned)
            self._to_rewind |= assigned
            if self._eos:
                self._restart_transaction()
        self._rewind()
        skip = assigned | self._to_rewind
        return [r for r in records if (r.topic, r.partition) not in skip] if skip else records

    def _rewind(self) -> None:
        if not self._to_rewind or self._backoff.waiting():
            return
        try:
            self._intake.rewind(self._to_rewind)
        except KafkaError as exc:  # the broker did not answer: try again after a backoff, consumption paused
            log.warning("could not read the committed offsets of %d partitions (%r); retrying in %.1f s", len(self._to_rewind), exc, self._backoff.failed())
            return
        self._to_rewind.clear()
        self._rewinds += 1

    def _forget(self, tps: set[tuple[str, int]]) -> int:
        """Drop all local state of these partitions (nothing of theirs is committed); returns how
        many waiting documents were dropped. Batches already in the pipeline finish and are
        published, but only acknowledged offsets still tracked are ever committed."""
        def gone(d: Document) -> bool:
            return (d.source.topic, d.source.partition) in tps

        dropped = self._waiting.drop(tps)
        unscreened, self._unscreened = self._unscreened, deque()
        for docs, arrived in unscreened:
            kept = [d for d in docs if not gone(d)]
            dropped += len(docs) - len(kept)
            if kept:
                self._unscreened.append((kept, arrived))
        ready, self._ready = self._ready, deque()
        for b in ready:
            kept = [d for d in b.docs if not gone(d)]
            for d in b.docs:
                if gone(d):
                    self._release(d)
            dropped += len(b.docs) - len(kept)
            if kept:
                self._ready.append(Batch(kept, b.cut, b.arrived))
        self._tracker.forget(tps)
        self._checkpoint.forget(tps)
        partitions = {p for _, p in tps}
        for key in [k for k in self._open_keys if k[0] in partitions]:
            del self._open_keys[key]
        return dropped

    # -- intake ------------------------------------------------------------------------------

    def _take_in(self, records) -> None:
        now = time.monotonic()
        self.stats.first_message = self.stats.first_message or now
        self.stats.received += len(records)
        docs: list[Document] = []
        for r in records:
            self._tracker.track((r.topic, r.partition), r.offset)
            item = decode_record(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value)
            if isinstance(item, Rejection):
                self._dead_letter(item)
            else:
                docs.append(item)

        self._m.stage_seconds.labels(stage="decode").observe(time.monotonic() - now)
        if docs:
            self._unscreened.append((docs, now))

    def _screen_waiting(self) -> None:
        """Dedup-check decoded documents in arrival order; with Redis down and fail-closed they
        stay here (consumption paused) until it answers."""
        while self._unscreened:
            docs, arrived = self._unscreened[0]
            try:
                self._screen(docs, arrived)
            except DedupError:
                return
            self._unscreened.popleft()

    def _screen(self, docs: list[Document], now: float) -> None:
        # Only a document with no earlier message of its id in flight may be skipped or sent ahead.
        first_in_line, seen = [], set()
        for d in docs:
            key = (d.source.partition, d.id)
            first_in_line.append(self._open_keys[key] == 0 and key not in seen)
            seen.add(key)
        lookups = [d for d, first in zip(docs, first_in_line) if first and d.op == "upsert"]
        hits = {id(d) for d, hit in zip(lookups, self._dedup.already_embedded(lookups)) if hit}
        if self._s.redis.enabled:
            self._m.dedup_hits.inc(len(hits))
            self._m.dedup_misses.inc(len(lookups) - len(hits))

        to_wait = []
        for d, first in zip(docs, first_in_line):
            if id(d) in hits:
                self.stats.dedup_hits += 1
                self._tracker.finish((d.source.topic, d.source.partition), d.source.offset)
                continue
            self._open_keys[(d.source.partition, d.id)] += 1
            if first and d.op == "delete":
                self._send_delete(d)
            else:
                to_wait.append(d)
        if to_wait:
            self._pipeline.tokenize(to_wait, now)

    # -- batches -------------------------------------------------------------------------------

    def _wait(self, rows: list[Document], arrived: float) -> None:
        """Tokenized rows into the waiting room; a document the long-text policy rejected is dead-lettered."""
        for d in rows:
            if d.rejected is not None:
                self._dead_letter(reject_document(d, *d.rejected), d)
        self._waiting.add((d for d in rows if d.rejected is None), arrived)

    def _queue(self, batches: list[Batch]) -> None:
        for b in batches:
            for d in b.docs:
                self._busy_keys.add(d)
            self._ready.append(b)

    def _dispatch(self) -> None:
        """Hand ready batches to the forward stage while it has room; deletes go out here."""
        while self._ready:
            batch = self._ready[0]
            if any(d.op == "upsert" for d in batch.docs) and not self._pipeline.dispatch(batch):
                return
            self._ready.popleft()
            self._m.stage_seconds.labels(stage="queue_wait").observe(time.monotonic() - batch.arrived)
            for d in batch.docs:
                if d.op == "delete":
                    self._send_delete(d)
                    self._release(d)

    def _release(self, d: Document) -> None:
        self._busy_keys.release(d)

    def _collect(self, sent: list[Sent]) -> None:
        """Take in batches the publish stage handed to the producer: checkpoint, stats, metrics."""
        owned = self._intake.assignment() if sent else set()
        for s in sent:
            enc = s.encoded
            for d in enc.batch.docs:
                if d.op == "upsert":
                    self._release(d)
            for delivery in s.deliveries:
                if delivery.tp in owned:  # a revoked partition's output went out, but is not ours to commit
                    self._checkpoint.add(delivery)
            record_sent(self.stats, self._m, s, enc.docs)

    def _send_delete(self, d: Document) -> None:
        self._checkpoint.add(self._sender.delete(d))
        self.stats.deletes += 1
        self._m.deletes.inc()
        self.stats.last_output = time.monotonic()

    def _dead_letter(self, rej: Rejection, doc: Document | None = None) -> None:
        self._checkpoint.add(self._sender.dead_letter(rej, doc))
        self.stats.dead_lettered[rej.reason] += 1
        self._m.dlq.labels(reason=rej.reason).inc()

    def _finish(self, acked: list[Delivery]) -> None:
        """Release the per-key hold of acknowledged documents; record their end-to-end latency."""
        now = time.time()
        for d in acked:
            if d.doc is None:
                continue
            if d.mark and d.source.timestamp_ms > 0:
                self._m.end_to_end_seconds.observe(max(0.0, now - d.source.timestamp_ms / 1000))
            key = (d.source.partition, d.doc.id)
            if self._open_keys[key] <= 1:
                self._open_keys.pop(key, None)
            else:
                self._open_keys[key] -= 1
