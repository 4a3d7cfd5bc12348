"""The main loop: consume → decode → dedup → batch → encode → publish → commit.

Everything here runs on one thread, so the Kafka consumer is only ever touched from it. Per-key
order: a document whose id still has an earlier message in flight in this worker is neither
dedup-checked nor published ahead of it; it waits in the waiting room behind its predecessor.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from worker.batch.policy import BatchLimits, default_max_tokens, padded_cost
from worker.batch.waiting import Batch, WaitingRoom
from worker.commit.checkpoint import Checkpoint, Delivery
from worker.commit.watermark import OffsetTracker
from worker.config import Settings
from worker.consume.decode import Document, Reason, Rejection, decode_record, reject_document
from worker.deadline import Deadline
from worker.encode.base import Encoder, is_out_of_memory
from worker.observe.health import Health
from worker.observe.metrics import Metrics
from worker.observe.progress import Progress
from worker.publish import codec
from worker.stats import percentile

log = logging.getLogger(__name__)
KeyOf = tuple[int, str]


@dataclass
class RunStats:
    received: int = 0
    embedded: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    batches: int = 0
    deletes: int = 0
    dedup_hits: int = 0
    dead_lettered: Counter = field(default_factory=Counter)
    encode_s: float = 0.0
    batch_seconds: list[float] = field(default_factory=list, repr=False)
    started: float = field(default_factory=time.monotonic)
    first_message: float | None = None
    last_output: float | None = None

    def summary(self) -> dict:
        busy = (self.last_output or time.monotonic()) - (self.first_message or self.started)
        busy = max(busy, 1e-9)
        return {
            "received": self.received,
            "embedded": self.embedded,
            "deletes": self.deletes,
            "dedup_hits": self.dedup_hits,
            "dead_lettered": sum(self.dead_lettered.values()),
            "batches": self.batches,
            "tokens": self.tokens,
            "docs_per_s": round(self.embedded / busy, 1),
            "tokens_per_s": round(self.tokens / busy, 1),
            "padding_efficiency": round(self.tokens / self.padded_tokens, 3) if self.padded_tokens else None,
            "encode_s": round(self.encode_s, 3),
            "batch_p50_s": _round(percentile(self.batch_seconds, 50)),
            "batch_p99_s": _round(percentile(self.batch_seconds, 99)),
            "busy_s": round(busy, 3),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


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
        self._open_keys: Counter[KeyOf] = Counter()
        self.stats = RunStats()

    # -- main loop ---------------------------------------------------------------------------

    def run(self, exit_when_idle_s: float | None = None) -> RunStats:
        commit_every = self._s.kafka.commit_interval_ms / 1000
        next_commit = Deadline(commit_every)
        last_message: float | None = None  # the idle clock starts once partitions are assigned
        try:
            while not self._stop.is_set():
                self._handle_revocations()
                unfinished = self._tracker.unfinished()
                self._m.inflight.set(unfinished)
                self._intake.hold(unfinished >= self._s.batch.max_pending)
                records = self._intake.poll(self._poll_timeout(next_commit))
                self._health.polled()
                self._m.last_poll.set(time.time())
                if records:
                    last_message = time.monotonic()
                    self._take_in(records)
                elif last_message is None and self._intake.assignment():
                    last_message = time.monotonic()
                self._ready.extend(self._waiting.take())
                if self._ready:  # one batch per turn, so poll() runs between batches
                    self._run_batch(self._ready.popleft())
                self._finish(self._checkpoint.resolve())
                if next_commit.expired():
                    self._finish(self._checkpoint.commit())
                    self._progress.tick(self.stats)
                    next_commit = Deadline(commit_every)
                    if exit_when_idle_s is not None and self._idle_for(last_message) >= exit_when_idle_s:
                        log.info("no message for %.1f s and nothing in flight: exiting", exit_when_idle_s)
                        break
        finally:
            self._shutdown()
        return self.stats

    def _idle_for(self, last_message: float | None) -> float:
        if last_message is None or self._ready or len(self._waiting) or self._tracker.unfinished():
            return 0.0
        return time.monotonic() - last_message

    def _poll_timeout(self, next_commit: Deadline) -> float:
        if self._ready:
            return 0.0
        wait = min(next_commit.remaining(), 0.5)
        batch_due = self._waiting.next_deadline()
        if batch_due is not None:
            wait = min(wait, max(0.0, batch_due - time.monotonic()))
        return wait

    def _shutdown(self) -> None:
        """Documents still waiting are abandoned uncommitted; everything published is committed."""
        self._health.stopping()
        self._m.ready.set(0)
        abandoned = len(self._waiting) + sum(len(b.docs) for b in self._ready)
        if abandoned:
            log.info("abandoning %d waiting documents uncommitted", abandoned)
        try:
            self._finish(self._checkpoint.commit())
        finally:
            log.info("run summary: %s", self.stats.summary())

    def _handle_revocations(self) -> None:
        revoked = self._intake.events.take_revoked()
        if not revoked:
            return
        dropped = self._waiting.drop(revoked)
        kept = [Batch([d for d in b.docs if (d.source.topic, d.source.partition) not in revoked], b.cut, b.arrived) for b in self._ready]
        dropped += sum(len(b.docs) for b in self._ready) - sum(len(b.docs) for b in kept)
        self._ready = deque(b for b in kept if b.docs)
        self._tracker.forget(revoked)
        self._checkpoint.forget(revoked)
        partitions = {p for _, p in revoked}
        for key in [k for k in self._open_keys if k[0] in partitions]:
            del self._open_keys[key]
        log.info("dropped %d waiting documents of revoked partitions (not committed)", dropped)

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
        upserts = [d for d in to_wait if d.op == "upsert"]
        started = time.monotonic()
        for d, ids in zip(upserts, self._encoder.tokenize([d.text for d in upserts])):
            d.token_ids = ids
        self._m.stage_seconds.labels(stage="tokenize").observe(time.monotonic() - started)
        self._waiting.add(to_wait, now)

    # -- batches -------------------------------------------------------------------------------

    def _run_batch(self, batch: Batch) -> None:
        upserts = [d for d in batch.docs if d.op == "upsert"]
        for d in batch.docs:
            if d.op == "delete":
                self._send_delete(d)
        if not upserts:
            return
        started = time.monotonic()
        self._m.stage_seconds.labels(stage="queue_wait").observe(started - batch.arrived)
        try:
            vectors = self._encoder.encode([d.token_ids for d in upserts])
        except Exception as exc:  # a model failure must not take the fleet down
            self._recover(upserts, exc)
            return
        forward_s = time.monotonic() - started
        self.stats.encode_s += forward_s
        self.stats.batch_seconds.append(forward_s)
        self.stats.batches += 1
        cut = batch.cut
        self.stats.padded_tokens += cut.padded_tokens
        self._m.stage_seconds.labels(stage="forward").observe(forward_s)
        self._m.batches.labels(reason=cut.reason.value).inc()
        self._m.batch_size.observe(len(upserts))
        self._m.batch_tokens.observe(cut.padded_tokens)
        self._m.padding_efficiency.observe(cut.padding_efficiency)
        self._publish_vectors(upserts, vectors)
        log.debug("batch: %d docs, %d tokens, %s, padding efficiency %.2f", len(upserts), cut.real_tokens, cut.reason.value, cut.padding_efficiency)

    def _recover(self, docs: list[Document], exc: Exception) -> None:
        """A batch failed in the model. Out of accelerator memory: free the cache and retry each half,
        down to single documents. Any other error: retry documents one at a time. A document that
        fails alone is dead-lettered with the reason; nothing is skipped or committed unpublished."""
        oom = is_out_of_memory(exc)
        if oom:
            self._m.oom_splits.inc()
            getattr(self._encoder, "free_memory", lambda: None)()
        if len(docs) == 1:
            reason = Reason.OUT_OF_MEMORY if oom else Reason.ENCODE_FAILED
            self._dead_letter(reject_document(docs[0], reason, f"{type(exc).__name__}: {exc}"[:300]), docs[0])
            return
        parts = [docs[: len(docs) // 2], docs[len(docs) // 2 :]] if oom else [[d] for d in docs]
        log.warning("batch of %d failed in the model (%s); retrying as %d parts", len(docs), type(exc).__name__, len(parts))
        for part in parts:
            try:
                vectors = self._encoder.encode([d.token_ids for d in part])
            except Exception as again:
                self._recover(part, again)
                continue
            self.stats.padded_tokens += padded_cost([d.n_tokens for d in part])
            self._publish_vectors(part, vectors)

    def _publish_vectors(self, docs: list[Document], vectors) -> None:
        started = time.monotonic()
        now_ms = int(time.time() * 1000)
        topic = self._s.kafka.output_topic
        tokens = sum(d.n_tokens for d in docs)
        for d, v in zip(docs, vectors):
            msg = codec.vector_message(d, v, self._encoder.info, self._s.output.vector_dtype, now_ms)
            self._checkpoint.add(Delivery(d.source, [self._publisher.send(topic, msg)], d))
            d.token_ids, d.text, d.raw = None, "", (None, None)  # free memory; the content hash stays
        self.stats.embedded += len(docs)
        self.stats.tokens += tokens
        self._m.documents.inc(len(docs))
        self._m.tokens.inc(tokens)
        self.stats.last_output = time.monotonic()
        self._m.stage_seconds.labels(stage="publish").observe(self.stats.last_output - started)

    def _send_delete(self, d: Document) -> None:
        msgs = codec.delete_messages(d, self._encoder.info, int(time.time() * 1000), tombstone=self._s.output.tombstones)
        futures = [self._publisher.send(self._s.kafka.output_topic, m) for m in msgs]
        self._checkpoint.add(Delivery(d.source, futures, d))
        self.stats.deletes += 1
        self._m.deletes.inc()
        self.stats.last_output = time.monotonic()

    def _dead_letter(self, rej: Rejection, doc: Document | None = None) -> None:
        log.warning("dead-lettering %s:%d@%d: %s (%s)", rej.source.topic, rej.source.partition, rej.source.offset, rej.reason, rej.detail)
        future = self._publisher.send(self._s.kafka.dlq_topic, codec.dead_letter(rej))
        self._checkpoint.add(Delivery(rej.source, [future], doc, mark=False))
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
