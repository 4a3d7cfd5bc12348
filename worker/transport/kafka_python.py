"""The transport over kafka-python (pure Python): kept for hosts where librdkafka cannot be used.

kafka-python runs rebalance listeners where blocking would stall heartbeats, and reports a
revocation once the partitions are gone; so this consumer records what changed and tells its owner
inside the next ``consume`` (``commits_on_revoke`` is False: nothing can be committed for them). It
also keeps its in-memory position for a partition revoked and assigned back, which would skip the
work dropped at the revocation; so every newly assigned partition is moved to its committed offset
before any of its records are returned, and records fetched from the old position are dropped.
Send futures become delivery callbacks (run on the producer's I/O thread).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, cast

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from kafka.errors import (
    CommitFailedError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    TopicAlreadyExistsError,
)
from kafka.structs import OffsetAndMetadata

from worker.config import KafkaSettings
from worker.deadline import Deadline
from worker.errors import (
    CommitRejectedError,
    FatalTransportError,
    MessageTooLargeError,
    TransportError,
)
from worker.transport.base import (
    Message,
    Offsets,
    OnDelivery,
    OnSent,
    Rebalance,
    Record,
    TopicPartitionKey,
    resume_offset,
)

log = logging.getLogger(__name__)
BATCH_BYTES = 1_000_000  # librdkafka's batch.size: within a broker's default message.max.bytes
ASSIGNORS = {
    "range": RangePartitionAssignor,
    "roundrobin": RoundRobinPartitionAssignor,
    "cooperative-sticky": CooperativeStickyAssignor,
}


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "bootstrap_servers": [
            s.strip() for s in settings.bootstrap_servers.split(",") if s.strip()
        ],
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": settings.request_timeout_ms,
    }
    if settings.sasl_mechanism:
        opts["sasl_mechanism"] = settings.sasl_mechanism
        opts["sasl_plain_username"] = settings.sasl_username
        opts["sasl_plain_password"] = (
            settings.sasl_password.get_secret_value() if settings.sasl_password else None
        )
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if getattr(settings, name):
            opts[name] = getattr(settings, name)
    if settings.ssl_password:
        opts["ssl_password"] = settings.ssl_password.get_secret_value()
    return opts


def offsets_to_commit(
    offsets: dict[tuple[str, int], int],
) -> dict[TopicPartition, OffsetAndMetadata]:
    """(topic, partition) → next offset to read, as kafka-python's commit calls take it."""
    return {TopicPartition(t, p): OffsetAndMetadata(off, "", -1) for (t, p), off in offsets.items()}


def create_topics(
    settings: KafkaSettings,
    topics: dict[str, int],
    *,
    replication: int | None = 1,
    config: dict[str, str] | None = None,
) -> None:
    """Create topics (name → partitions) with ``config``; existing ones are left as they are.
    Replication 1 suits the local stack; ``None`` takes as many replicas as there are brokers, up
    to 3. Through kafka-python's admin client whichever client the worker uses: it is a core
    dependency, and this runs once, off the hot path."""
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(**client_options(settings))
    try:
        # only what is missing: a principal without Create is refused even for an existing topic
        existing = set(admin.list_topics())
        wanted = {n: p for n, p in topics.items() if n not in existing}
        if wanted and replication is None:
            replication = max(1, min(3, len(admin.describe_cluster().get("brokers", []))))
        for name, partitions in wanted.items():
            try:
                admin.create_topics(
                    [NewTopic(name, partitions, replication, topic_configs=config or {})]
                )
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def existing_topics(settings: KafkaSettings) -> set[str]:
    """The cluster's topic names (kafka-python's admin client, as ``create_topics``)."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(**client_options(settings))
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def translate(exc: BaseException, what: str) -> TransportError:
    text = f"{what}: {exc!r}"
    if isinstance(exc, CommitFailedError):
        return CommitRejectedError(text)
    if isinstance(exc, MessageSizeTooLargeError):
        return MessageTooLargeError(text)
    if isinstance(exc, KafkaError) and type(exc).__name__ in (
        "ProducerFencedError",
        "InvalidProducerEpochError",
        "TransactionalIdAuthorizationFailedError",
    ):
        return FatalTransportError(text)
    return TransportError(text)


class _Changes(ConsumerRebalanceListener):
    """Assignment changes as kafka-python reports them, kept until the consuming thread asks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.revoked: set[TopicPartitionKey] = set()
        self.lost: set[TopicPartitionKey] = set()
        self.assigned: set[TopicPartitionKey] = set()

    def on_partitions_revoked(self, revoked) -> None:
        with self._lock:
            self.revoked |= {(tp.topic, tp.partition) for tp in revoked}

    def on_partitions_lost(self, lost) -> None:
        with self._lock:
            self.lost |= {(tp.topic, tp.partition) for tp in lost}

    def on_partitions_assigned(self, assigned) -> None:
        with self._lock:
            self.assigned |= {(tp.topic, tp.partition) for tp in assigned}

    def pending(self) -> bool:
        with self._lock:
            return bool(self.revoked or self.lost or self.assigned)

    def take(self) -> tuple[set, set, set]:
        with self._lock:
            out = (self.revoked, self.lost, self.assigned)
            self.revoked, self.lost, self.assigned = set(), set(), set()
        return out


class KafkaPythonConsumer:
    commits_on_revoke = False

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        group_id: str | None = None,
        read_committed: bool | None = None,
    ) -> None:
        eos = settings.exactly_once if read_committed is None else read_committed
        self._c = KafkaConsumer(
            **client_options(settings),
            group_id=group_id or settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset=settings.auto_offset_reset,
            max_poll_records=settings.max_poll_records,
            max_poll_interval_ms=settings.max_poll_interval_ms,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            partition_assignment_strategy=(ASSIGNORS[settings.assignment_strategy],),
            group_instance_id=settings.group_instance_id,
            isolation_level="read_committed" if eos else "read_uncommitted",
        )
        self._topic = settings.input_topic
        self._timeout_ms = settings.request_timeout_ms
        self._reset = settings.auto_offset_reset
        self._changes = _Changes()
        self._listener: Rebalance | None = None
        self._unplaced: set[TopicPartitionKey] = set()  # assigned, not yet moved to their commit
        self._holding = False

    def subscribe(self, listener: Rebalance, topic: str | None = None) -> None:
        self._listener = listener
        self._c.subscribe([topic or self._topic], listener=self._changes)

    def consume(self, max_records: int, timeout_s: float) -> list[Record]:
        self._apply_hold()
        batches = self._c.poll(timeout_ms=max(0, int(timeout_s * 1000)), max_records=max_records)
        revoked, lost, assigned = self._changes.take()
        if self._listener is not None:
            if lost:
                self._listener.on_lost(lost)
            if revoked - lost:
                self._listener.on_revoked(revoked - lost)
        self._unplaced = (self._unplaced - revoked - lost) | assigned
        skip = set(self._unplaced)
        self._place()
        if assigned and self._listener is not None:
            self._listener.on_assigned(assigned)
        out = []
        for records in batches.values():
            for r in records:
                if (r.topic, r.partition) not in skip:
                    out.append((r.topic, r.partition, r.offset, r.timestamp, r.key, r.value))
        return cast("list[Record]", out)  # plain tuples in Record's order

    def _place(self) -> None:
        """Move newly assigned partitions to their commit; those that fail (broker away) stay
        paused and are tried again at the next consume."""
        if not self._unplaced:
            return
        try:
            self.rewind(self._unplaced)
        except TransportError as exc:
            log.warning(
                "could not read the committed offsets of %d assigned partitions (%s); retrying",
                len(self._unplaced),
                exc,
            )
            return
        self._unplaced = set()

    def _apply_hold(self) -> None:
        """Pausing is re-applied on every call: newly assigned partitions start unpaused."""
        assigned = self._c.assignment()
        unplaced = {tp for tp in assigned if (tp.topic, tp.partition) in self._unplaced}
        paused = assigned if self._holding else unplaced
        if paused:
            self._c.pause(*paused)
        resume = set(self._c.paused()) - set(paused)
        if resume:
            self._c.resume(*resume)

    def assignment(self) -> set[TopicPartitionKey]:
        return {(tp.topic, tp.partition) for tp in self._c.assignment()}

    def settled(self) -> bool:
        """No assignment change waits to be reported, every assigned partition is placed, and the
        group is stable. Under the eager protocol kafka-python announces a revocation before it
        rejoins and keeps reporting the old partitions as assigned until the new assignment comes,
        which can take seconds: the member is mid-rebalance all that time, not idle."""
        if self._unplaced or self._changes.pending():
            return False
        coordinator = getattr(
            self._c, "_coordinator", None
        )  # kafka-python's group coordinator: no public view of its state
        if coordinator is None:
            return True
        return coordinator.generation_if_stable() is not None and not coordinator.need_rejoin()

    def hold(self, paused: bool) -> None:
        self._holding = paused
        self._apply_hold()

    def rewind(self, tps: set[TopicPartitionKey], starts: Offsets | None = None) -> None:
        try:
            assigned = self._c.assignment()
            for topic, partition in sorted(tps):
                tp = TopicPartition(topic, partition)
                if tp not in assigned:
                    continue  # already moved on by a later rebalance
                offset = resume_offset(
                    self._c.committed(tp, timeout_ms=self._timeout_ms),
                    (starts or {}).get((topic, partition)),
                )
                if offset is not None:
                    self._c.seek(tp, offset)
                elif self._reset == "earliest":
                    self._c.seek_to_beginning(tp)
                else:
                    self._c.seek_to_end(tp)
        except KafkaError as exc:
            raise translate(exc, "reading committed offsets") from None

    def commit(self, offsets: Offsets) -> None:
        if not offsets:
            return
        try:
            self._c.commit(offsets_to_commit(offsets), timeout_ms=self._timeout_ms)
        except KafkaError as exc:
            raise translate(exc, "committing offsets") from None

    def lag(self) -> dict[TopicPartitionKey, int]:
        out = {}
        for tp in self._c.assignment():
            high = self._c.highwater(tp)
            if high is None:
                continue
            try:
                position = self._c.position(tp, timeout_ms=self._timeout_ms)
            except KafkaError:  # a position still being looked up while the broker is away
                continue
            if position is not None:
                out[(tp.topic, tp.partition)] = max(0, high - position)
        return out

    def committed(self, tps: set[TopicPartitionKey]) -> dict[TopicPartitionKey, int | None]:
        try:
            return {
                (t, p): self._c.committed(TopicPartition(t, p), timeout_ms=self._timeout_ms)
                for t, p in sorted(tps)
            }
        except KafkaError as exc:
            raise translate(exc, "reading committed offsets") from None

    def group_metadata(self) -> object:
        return self._c.group_metadata()

    def close(self) -> None:
        self._c.close(autocommit=False)


class KafkaPythonProducer:
    def __init__(
        self,
        settings: KafkaSettings,
        *,
        transactional_id: str | None = None,
        client_suffix: str = "",
    ) -> None:
        extra = {}
        if transactional_id:
            extra = {
                "transactional_id": transactional_id,
                "transaction_timeout_ms": settings.transaction_timeout_ms,
            }
        options = client_options(settings)
        if client_suffix:
            options["client_id"] += client_suffix
        try:
            self._p = KafkaProducer(
                **options,
                acks="all",
                enable_idempotence=True,  # broker-side retries cannot reorder or duplicate a partition's messages
                linger_ms=settings.linger_ms,
                max_request_size=settings.max_message_bytes,
                # a vector message is ~1.6 KB: the default 16 KB batches meant a record batch (and
                # its Python work in the sender thread) per ten outputs; librdkafka's size instead
                batch_size=min(BATCH_BYTES, settings.max_message_bytes),
                **extra,
            )
            self.transactional = transactional_id is not None
            if self.transactional:
                self._p.init_transactions()  # fences an earlier producer with this id, aborting its open transaction
                self._p.begin_transaction()
        except KafkaError as exc:
            raise translate(exc, "starting the producer") from None

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list,
        on_delivery: OnDelivery,
    ) -> None:
        try:
            future = self._p.send(topic, key=key, value=value, headers=headers)
        except KafkaError as exc:  # too large, a full buffer or missing metadata past max_block_ms
            raise translate(exc, f"producing to {topic}") from None
        future.add_callback(lambda _md: on_delivery(None))
        future.add_errback(lambda exc: on_delivery(translate(exc, f"delivering to {topic}")))

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        on_sent: OnSent,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> None:
        try:
            future = self._p.send(
                topic,
                key=key,
                value=value,
                timestamp_ms=timestamp_ms,
                headers=headers,
                partition=partition,
            )
        except KafkaError as exc:
            raise translate(exc, f"producing to {topic}") from None
        future.add_callback(lambda md: on_sent(None, md.partition, md.offset, md.timestamp))
        future.add_errback(
            lambda exc: on_sent(translate(exc, f"delivering to {topic}"), -1, -1, -1)
        )

    def warm(self, topic: str) -> None:
        try:
            self._p.partitions_for(topic)
        except KafkaError as exc:
            raise translate(exc, f"reading the metadata of {topic}") from None

    def reachable(self, timeout_s: float) -> None:
        """Already known: the constructor fails when no broker answers its bootstrap."""

    def poll(self) -> None:
        """kafka-python delivers on its I/O thread: nothing to serve."""

    def flush(self, timeout_s: float) -> None:
        try:
            self._p.flush(timeout=timeout_s)
        except KafkaTimeoutError as exc:
            raise TransportError(
                f"messages not acknowledged within {timeout_s:.0f} s: {exc}"
            ) from None

    def commit_transaction(self, offsets: Offsets, group_metadata: object) -> None:
        try:
            if offsets:
                self._p.send_offsets_to_transaction(offsets_to_commit(offsets), group_metadata)
            self._p.commit_transaction()
            self._p.begin_transaction()
        except KafkaError as exc:
            raise translate(exc, "committing the transaction") from None

    def abort_transaction(self) -> None:
        try:
            self._p.abort_transaction()
            self._p.begin_transaction()
        except KafkaError as exc:
            raise translate(exc, "aborting the transaction") from None

    def close(self, timeout_s: float = 10.0) -> None:
        self._p.close(timeout=timeout_s)


class KafkaPythonReader:
    """Whole topics without a group. A partition is at its end when the consumer's position has
    reached the high watermark the last fetch carried (``highwater``); a ``read_committed`` reader
    reaches it too once no transaction is open (the commit marker is stepped over)."""

    def __init__(
        self,
        settings: KafkaSettings,
        topics: list[str],
        *,
        read_committed: bool = False,
        since_ms: int | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self._c = KafkaConsumer(
            **client_options(settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed" if read_committed else "read_uncommitted",
        )
        deadline = Deadline(timeout_s)
        self._tps = [tp for topic in topics for tp in self._partitions(topic, deadline)]
        self._c.assign(self._tps)
        found = {}
        if since_ms is not None and self._tps:
            try:
                found = self._c.offsets_for_times(dict.fromkeys(self._tps, since_ms))
            except KafkaError:
                found = {}
        for tp in self._tps:
            at = found.get(tp)
            if at is not None:
                self._c.seek(tp, at.offset)
            else:  # where the broker cannot say, the beginning (reading more is harmless, skipping is not)
                self._c.seek_to_beginning(tp)

    def _partitions(self, topic: str, deadline: Deadline) -> list[TopicPartition]:
        partitions = self._c.partitions_for_topic(topic)
        while not partitions and not deadline.expired():
            time.sleep(0.2)
            partitions = self._c.partitions_for_topic(topic)
        return [TopicPartition(topic, p) for p in sorted(partitions or [])]

    def read(self, timeout_s: float) -> list[Message]:
        out: list[Message] = []
        for records in self._c.poll(timeout_ms=max(0, int(timeout_s * 1000))).values():
            out.extend(
                Message(
                    r.topic,
                    r.partition,
                    r.offset,
                    r.timestamp,
                    r.key,
                    r.value,
                    list(r.headers or []),
                )
                for r in records
            )
        return out

    def at_end(self) -> bool:
        for tp in self._tps:
            high = self._c.highwater(tp)
            if high is None or self._c.position(tp) < high:
                return False
        return True

    def close(self) -> None:
        self._c.close()
