"""Publish documents to the input topic, keyed by document id: as fast as possible (optionally from
several processes) or open-loop at a scheduled rate, with a progress bar."""

from __future__ import annotations

import multiprocessing
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from loadgen.rate import Schedule
from worker.config import KafkaSettings
from worker.consume.decode import encode_document
from worker.transport import transport


@dataclass
class PublishReport:
    messages: int = 0
    bytes: int = 0
    end_offsets: dict[int, int] = field(
        default_factory=dict
    )  # partition -> last offset written + 1
    # (partition, offset, index into the documents, intended send time in ms) of every message
    sent: list[tuple[int, int, int, int]] = field(default_factory=list)
    late_s: float = 0.0  # how far the sender fell behind its schedule at worst
    started_at: float = 0.0  # wall time of the first send
    finished_at: float = 0.0  # wall time the last acknowledgement was in

    @property
    def seconds(self) -> float:
        """The send window: first send to the last acknowledgement."""
        return self.finished_at - self.started_at

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    def merge(self, other: PublishReport) -> None:
        self.messages += other.messages
        self.bytes += other.bytes
        self.late_s = max(self.late_s, other.late_s)
        self.started_at = min(self.started_at or other.started_at, other.started_at)
        self.finished_at = max(self.finished_at, other.finished_at)
        self.sent.extend(other.sent)
        for p, off in other.end_offsets.items():
            self.end_offsets[p] = max(self.end_offsets.get(p, 0), off)


class TopicSender:
    """The transport's producer (``EMBED_KAFKA__CLIENT``), lingering at least 20 ms to fill record
    batches; collects where each message landed. Here librdkafka sends ~180,000 messages/s from
    one process, kafka-python ~25,000 (use ``--processes`` with it)."""

    def __init__(self, settings: KafkaSettings) -> None:
        settings = settings.model_copy(update={"linger_ms": max(settings.linger_ms, 20)})
        self._producer = transport(settings).producer(settings, client_suffix="-loadgen")
        self._acks: list[tuple[int, int, int, int]] = []
        self._errors: list[str] = []

    def prepare(self, topic: str) -> None:
        self._producer.warm(topic)  # metadata before the clock starts

    def send(
        self,
        topic: str,
        key: bytes,
        value: bytes | None,
        timestamp_ms: int | None,
        index: int,
        on_ack,
    ) -> None:
        def sent(err, partition: int, offset: int, stamp: int) -> None:
            if err is not None:
                self._errors.append(str(err))
                return
            self._acks.append((index, partition, offset, stamp))
            if on_ack is not None:
                on_ack(partition, offset)

        self._producer.send(topic, key, value, sent, timestamp_ms)
        self._producer.poll()

    def flush(self) -> list[tuple[int, int, int, int]]:
        """Every acknowledgement since the last flush: (index, partition, offset, timestamp);
        raises if any send failed."""
        self._producer.flush(60)
        if self._errors:
            raise RuntimeError(f"{len(self._errors)} sends failed: {self._errors[:3]}")
        acks, self._acks = self._acks, []
        return acks

    def close(self) -> None:
        self._producer.close()


def contract_message(doc: dict) -> tuple[bytes, bytes]:
    """(key, value) of a document under the input contract: msgpack, keyed by its id."""
    value = encode_document(
        doc["id"],
        doc.get("text"),
        op=doc.get("op", "upsert"),
        metadata=doc.get("metadata"),
        long_text=doc.get("long_text"),
    )
    return doc["id"].encode("utf-8"), value


def publish(
    sender: TopicSender,
    topic: str,
    docs: Sequence[dict],
    *,
    schedule: Schedule | None = None,
    indexes: Sequence[int] | None = None,
    progress: Callable[[int], None] | None = None,
    on_ack: Callable[[int, int], None] | None = None,
    encode: Callable[[dict], tuple[bytes, bytes | None]] | None = None,
) -> PublishReport:
    """Send ``docs`` (or those at ``indexes``) and wait for every acknowledgement; raises on a failed send.

    With a schedule, message i waits for its intended time and carries it as its timestamp.
    ``on_ack(partition, offset)`` is called as acknowledgements arrive. ``encode`` makes each
    document's (key, value); the default is the input contract (``contract_message``)."""
    encode = encode or contract_message
    report = PublishReport()
    order = range(len(docs)) if indexes is None else indexes
    offsets = schedule.offsets(len(order)) if schedule else None
    intended: dict[int, int] = {}
    sender.prepare(topic)
    report.started_at, mono0 = time.time(), time.monotonic()
    for n, i in enumerate(order):
        doc = docs[i]
        intended_ms = None  # flat out: the producer stamps the send time itself
        if offsets is not None:
            delay = offsets[n] - (time.monotonic() - mono0)
            if delay > 0:
                time.sleep(delay)
            else:
                report.late_s = max(report.late_s, -delay)
            intended_ms = intended[i] = int((report.started_at + offsets[n]) * 1000)
        key, value = encode(doc)
        sender.send(topic, key, value, intended_ms, i, on_ack)
        report.bytes += len(value or b"")
        if progress is not None and n % 500 == 499:
            progress(500)
    acks = sender.flush()
    report.finished_at = time.time()
    if progress is not None:
        progress(len(order) % 500)
    for i, partition, offset, stamp in acks:
        report.sent.append((partition, offset, i, intended.get(i, stamp)))
        report.end_offsets[partition] = max(report.end_offsets.get(partition, 0), offset + 1)
    report.messages = len(acks)
    return report


# -- several processes ------------------------------------------------------------------------
# For kafka-python (~25,000 messages/s per process here) or a bigger machine. Documents are split
# by a hash of their id, so each id's events stay in one process, in order.

_shared: dict = {}


def _child(args: tuple) -> PublishReport:
    share, n_shares, schedule = args
    settings, topic, docs, counter = (
        _shared["settings"],
        _shared["topic"],
        _shared["docs"],
        _shared["counter"],
    )
    indexes = [i for i, d in enumerate(docs) if zlib.crc32(d["id"].encode()) % n_shares == share]

    def tick(n: int) -> None:
        with counter.get_lock():
            counter.value += n

    sender = TopicSender(settings)
    try:
        return publish(sender, topic, docs, schedule=schedule, indexes=indexes, progress=tick)
    finally:
        sender.close()


def publish_parallel(
    settings: KafkaSettings,
    topic: str,
    docs: Sequence[dict],
    processes: int,
    *,
    schedule: Schedule | None = None,
    progress: Callable[[int], None] | None = None,
) -> PublishReport:
    if processes <= 1:
        sender = TopicSender(settings)
        try:
            return publish(sender, topic, docs, schedule=schedule, progress=progress)
        finally:
            sender.close()
    ctx = multiprocessing.get_context("fork")
    counter = ctx.Value("l", 0)
    _shared.update(settings=settings, topic=topic, docs=docs, counter=counter)
    share_schedule = None
    if schedule is not None:  # each process sends its share of the rate
        share_schedule = Schedule(
            schedule.rate / processes,
            schedule.ramp_to / processes if schedule.ramp_to else None,
            schedule.ramp_s,
            schedule.bursts,
        )
    done = threading.Event()

    def report_progress() -> None:
        seen = 0
        while not done.wait(0.2):
            now = counter.value
            if progress is not None and now > seen:
                progress(now - seen)
                seen = now
        if progress is not None and counter.value > seen:
            progress(counter.value - seen)

    watcher = threading.Thread(target=report_progress, daemon=True)
    watcher.start()
    try:
        with ctx.Pool(processes) as pool:
            parts = pool.map(_child, [(k, processes, share_schedule) for k in range(processes)])
    finally:
        done.set()
        watcher.join()
        _shared.clear()
    total = PublishReport()
    for part in parts:
        total.merge(part)
    return total
