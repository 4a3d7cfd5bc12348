"""``embed-worker sink``: keep the reference index in step with the output topic.

One loop on one thread: poll the output topic (its own consumer group), turn the run of messages
into a plan (``events.plan``), apply it to the index, and only then commit the offsets of what was
applied. A crash between the write and the commit replays those messages; applying them again
leaves the index as it was, so nothing is lost and nothing is doubled. A document's messages share
a key, hence a partition, so they are applied in the order the worker published them.

The index is an embedded store on this process's disk: run one sink per index (one replica).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from kafka import KafkaConsumer
from kafka.errors import CommitFailedError, KafkaError, KafkaTimeoutError

from worker.config import Settings
from worker.errors import BrokerUnavailableError
from worker.kafka_options import client_options, offsets_to_commit
from worker.sink.events import plan
from worker.sink.index import Index

log = logging.getLogger(__name__)


@dataclass
class SinkStats:
    messages: int = 0
    upserted: int = 0  # points written (a replay writes them again)
    deleted_documents: int = 0
    skipped: int = 0
    writes: int = 0
    commits: int = 0
    commit_failures: int = 0
    write_s: list[float] = field(default_factory=list, repr=False)

    def summary(self, points: int) -> dict:
        return {
            "messages": self.messages, "upserted": self.upserted, "deleted_documents": self.deleted_documents,
            "skipped": self.skipped, "writes": self.writes, "commits": self.commits, "commit_failures": self.commit_failures,
            "points_in_index": points, "write_s_total": round(sum(self.write_s), 3),
        }


def open_consumer(settings: Settings) -> KafkaConsumer:
    k = settings.kafka
    try:
        consumer = KafkaConsumer(
            **client_options(k),
            group_id=settings.sink.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=settings.sink.max_poll_records,
            max_poll_interval_ms=k.max_poll_interval_ms,
            session_timeout_ms=k.session_timeout_ms,
            heartbeat_interval_ms=k.heartbeat_interval_ms,
            isolation_level="read_committed" if k.exactly_once else "read_uncommitted",
        )
    except KafkaError as exc:
        raise BrokerUnavailableError(f"no Kafka broker reachable at {k.bootstrap_servers} (EMBED_KAFKA__BOOTSTRAP_SERVERS): {exc}") from None
    consumer.subscribe([k.output_topic])
    return consumer


def run_sink(settings: Settings, stop: threading.Event, exit_when_idle_s: float | None = None) -> dict:
    index = Index(settings.sink.path, settings.sink.table)
    consumer = open_consumer(settings)
    stats = SinkStats()
    log.info("sink: %s → %s (table %s), group %s", settings.kafka.output_topic, settings.sink.path, settings.sink.table, settings.sink.group_id)
    last_message = None
    try:
        while not stop.is_set():
            batches = consumer.poll(timeout_ms=500)
            records = [r for rs in batches.values() for r in rs]
            now = time.monotonic()
            if not records:
                if last_message is None and consumer.assignment():
                    last_message = now
                if exit_when_idle_s is not None and last_message is not None and now - last_message >= exit_when_idle_s:
                    log.info("sink: no message for %.1f s: exiting", exit_when_idle_s)
                    break
                continue
            last_message = now
            _apply(index, records, stats)
            if index.writes and index.writes % settings.sink.compact_every == 0:
                index.compact()
            _commit(consumer, records, stats)
    finally:
        consumer.close(autocommit=False)
        summary = stats.summary(index.count())
        log.info("sink summary: %s", summary)
    return summary


def _apply(index: Index, records, stats: SinkStats) -> None:
    started = time.monotonic()
    p = plan((r.key, r.value) for r in records)
    index.apply(p)
    stats.write_s.append(time.monotonic() - started)
    stats.messages += len(records)
    stats.upserted += len(p.upserts)
    stats.deleted_documents += len(p.drop)
    stats.skipped += p.skipped
    stats.writes += 1


def _commit(consumer: KafkaConsumer, records, stats: SinkStats) -> None:
    """Commit past everything applied. A refused commit (mid-rebalance) is only logged: the next
    owner replays those messages, which the index absorbs."""
    offsets: dict[tuple[str, int], int] = {}
    for r in records:
        offsets[(r.topic, r.partition)] = max(offsets.get((r.topic, r.partition), 0), r.offset + 1)
    try:
        consumer.commit(offsets_to_commit(offsets))
        stats.commits += 1
    except (CommitFailedError, KafkaTimeoutError, KafkaError) as exc:
        stats.commit_failures += 1
        log.warning("sink: commit refused (%s); the applied messages will be replayed and absorbed", exc)
