"""``embed-worker sink``: keep the reference index in step with the output topic.

One loop on one thread: poll the output topic (its own consumer group), turn the run of messages
into a plan (``events.plan``), apply it to the index, and only then commit the offsets of what was
applied. A crash between the write and the commit replays those messages; applying them again
leaves the index as it was, so nothing is lost and nothing is doubled. A document's messages share
a key, hence a partition, so they are applied in the order the worker published them.

The index is LanceDB on this process's disk (run one sink per index: one replica), or a PostgreSQL
table with pgvector (``EMBED_SINK__STORE=postgres``), where each poll is one transaction.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from worker.config import Settings
from worker.errors import BrokerUnavailableError, IndexStoreError, TransportError
from worker.observe.health import Health
from worker.observe.metrics import DURATION_BUCKETS
from worker.sink.events import plan
from worker.sink.index import Index, open_index
from worker.transport import Consumer, TopicPartitionKey, transport

log = logging.getLogger(__name__)


class SinkMetrics:
    """What ``embed-worker sink`` exports on /metrics (``embed_sink_*``)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.messages = Counter(
            "embed_sink_messages_total", "Output messages applied to the index.", registry=r
        )
        self.upserted = Counter(
            "embed_sink_points_upserted_total",
            "Points written (a replay writes them again).",
            registry=r,
        )
        self.deleted = Counter(
            "embed_sink_documents_deleted_total",
            "Documents whose points were all removed.",
            registry=r,
        )
        self.skipped = Counter(
            "embed_sink_skipped_total",
            "Messages that were not embedding events, and points the store refused (logged, committed).",
            registry=r,
        )
        self.other_model = Counter(
            "embed_sink_other_model_vectors_total",
            "Vectors left out because their model or dimension is not the index's (logged once per model; see docs/operations.md, Model rollout).",
            ["model"],
            registry=r,
        )
        self.commit_failures = Counter(
            "embed_sink_commit_failures_total",
            "Commits refused (the messages are replayed).",
            registry=r,
        )
        self.write_seconds = Histogram(
            "embed_sink_write_seconds",
            "Time to apply one poll to the index.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.points = Gauge("embed_sink_points", "Points in the index.", registry=r)
        self.lag = Gauge(
            "embed_sink_lag_messages",
            "Messages of the output topic not yet applied, over the sink's partitions.",
            registry=r,
        )


@dataclass
class SinkStats:
    messages: int = 0
    upserted: int = 0  # points written (a replay writes them again)
    deleted_documents: int = 0
    skipped: int = 0
    other_model: int = 0  # vectors of a model or dimension not the index's, left out
    writes: int = 0
    commits: int = 0
    commit_failures: int = 0
    write_s: list[float] = field(default_factory=list, repr=False)

    def summary(self, points: int) -> dict:
        return {
            "messages": self.messages,
            "upserted": self.upserted,
            "deleted_documents": self.deleted_documents,
            "skipped": self.skipped,
            "other_model": self.other_model,
            "writes": self.writes,
            "commits": self.commits,
            "commit_failures": self.commit_failures,
            "points_in_index": points,
            "write_s_total": round(sum(self.write_s), 3),
        }


class _Assignments:
    """The sink commits after every write, so a rebalance finds nothing of its own to commit: the
    assignment changes are only logged."""

    def on_assigned(self, tps: set[TopicPartitionKey]) -> None:
        if tps:
            log.info("sink: partitions assigned: %s", sorted(tps))

    def on_revoked(self, tps: set[TopicPartitionKey]) -> None:
        log.info("sink: partitions revoked: %s", sorted(tps))

    def on_lost(self, tps: set[TopicPartitionKey]) -> None:
        log.info("sink: partitions lost: %s", sorted(tps))


def open_consumer(settings: Settings) -> Consumer:
    """The transport's consumer (``EMBED_KAFKA__CLIENT``) in the sink's own group, from the
    output topic's start when the group has no commit."""
    k = settings.kafka.model_copy(
        update={"auto_offset_reset": "earliest", "max_poll_records": settings.sink.max_poll_records}
    )
    try:
        consumer = transport(k).consumer(k, group_id=settings.sink.group_id)
    except TransportError as exc:
        raise BrokerUnavailableError(
            f"no Kafka broker reachable at {k.bootstrap_servers} (EMBED_KAFKA__BOOTSTRAP_SERVERS): {exc}"
        ) from None
    consumer.subscribe(_Assignments(), k.output_topic)
    return consumer


def run_sink(
    settings: Settings, stop: threading.Event, exit_when_idle_s: float | None = None
) -> dict:
    from worker.observe.server import serving

    metrics, health = SinkMetrics(), Health(settings.metrics.stall_after_s)
    with serving(settings.metrics, metrics.registry, health):
        return _run(settings, stop, exit_when_idle_s, metrics, health)


def _run(
    settings: Settings,
    stop: threading.Event,
    exit_when_idle_s: float | None,
    metrics: SinkMetrics,
    health: Health,
) -> dict:
    index = open_index(settings.sink)
    consumer = open_consumer(settings)
    stats = SinkStats()
    metrics.points.set(index.count())
    health.warmed_up()
    log.info(
        "sink: %s → %s %s (table %s), group %s",
        settings.kafka.output_topic,
        settings.sink.store,
        index.path,
        settings.sink.table,
        settings.sink.group_id,
    )
    last_message = None
    warned: set[str] = set()  # models whose vectors were left out, logged once each
    try:
        while not stop.is_set():
            records = consumer.consume(settings.sink.max_poll_records, 0.5)
            health.polled()
            now = time.monotonic()
            if not records:
                if last_message is None and consumer.assignment():
                    last_message = now
                if (
                    exit_when_idle_s is not None
                    and last_message is not None
                    and now - last_message >= exit_when_idle_s
                ):
                    log.info("sink: no message for %.1f s: exiting", exit_when_idle_s)
                    break
                continue
            last_message = now
            _apply(index, records, stats, metrics, warned)
            if stats.writes % settings.sink.compact_every == 0:
                index.compact()
            _commit(consumer, records, stats, metrics)
            metrics.lag.set(_lag(consumer))
    finally:
        health.stopping()
        consumer.close()
        try:
            points = index.count()
        except (
            IndexStoreError
        ):  # the store is what failed: the summary says so rather than hide the error
            points = -1
        summary = stats.summary(points)
        log.info("sink summary: %s", summary)
    return summary


def _apply(index: Index, records, stats: SinkStats, metrics: SinkMetrics, warned: set[str]) -> None:
    started = time.monotonic()
    p = plan(
        ((r[4], r[5]) for r in records), index.model
    )  # (key, value): records are tuples in Record's order
    for model, n in p.other_models.items():
        stats.other_model += n
        metrics.other_model.labels(model=model).inc(n)
        if model not in warned:
            warned.add(model)
            held = index.model or p.model
            assert held is not None  # vectors are left out only for differing from the plan's model
            log.warning(
                "sink: leaving out vectors of %s: the index at %s holds %s (%s dimensions); a new model needs a new index (docs/operations.md: Model rollout)",
                model,
                index.path,
                *held,
            )
    index.apply(p)
    refused = index.take_refused()  # points the store refused (logged there)
    took = time.monotonic() - started
    stats.write_s.append(took)
    stats.messages += len(records)
    upserted = sum(map(len, p.points.values()))
    stats.upserted += upserted
    stats.deleted_documents += len(p.drop)
    stats.skipped += p.skipped + refused
    stats.writes += 1
    metrics.write_seconds.observe(took)
    metrics.messages.inc(len(records))
    metrics.upserted.inc(upserted)
    metrics.deleted.inc(len(p.drop))
    metrics.skipped.inc(p.skipped + refused)
    metrics.points.set(index.count())


def _lag(consumer: Consumer) -> int:
    """Messages behind the high watermark the last fetches reported, over the assigned partitions."""
    return sum(consumer.lag().values())


def _commit(consumer: Consumer, records, stats: SinkStats, metrics: SinkMetrics) -> None:
    """Commit past everything applied. A refused commit (mid-rebalance) is only logged: the next
    owner replays those messages, which the index absorbs."""
    offsets: dict[TopicPartitionKey, int] = {}
    for topic, partition, offset, *_ in records:
        if offset + 1 > offsets.get((topic, partition), 0):
            offsets[(topic, partition)] = offset + 1
    try:
        consumer.commit(offsets)
        stats.commits += 1
    except TransportError as exc:
        stats.commit_failures += 1
        metrics.commit_failures.inc()
        log.warning(
            "sink: commit refused (%s); the applied messages will be replayed and absorbed", exc
        )
