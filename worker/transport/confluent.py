"""The transport over confluent-kafka (librdkafka, in C): the default client.

librdkafka fetches, decompresses and checks records on its own threads and hands them over in
batches (``consume(num_messages)``), and builds produce requests in C: a few µs of Python per
message, where kafka-python spends tens. Settings that matter for our guarantees:

- ``enable.auto.commit`` and ``enable.auto.offset.store`` off: only the worker's checkpoint commits;
- ``partitioner=murmur2_random``: a key lands in the partition kafka-python and the Java client
  pick (librdkafka's default, CRC32, would move every key);
- rebalance callbacks run inside ``consume`` on the calling thread; under cooperative-sticky the
  assignment changes with ``incremental_assign``/``incremental_unassign``; an assigned partition
  starts at its committed offset, and is paused at once if the worker is holding consumption.
"""

from __future__ import annotations

import logging
import time
from typing import cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from worker.config import KafkaSettings
from worker.deadline import Deadline
from worker.errors import (
    CommitRejectedError,
    FatalTransportError,
    MessageTooLargeError,
    TransactionAbortError,
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

_REJECTED = {
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.FENCED_INSTANCE_ID,
    KafkaError._ASSIGNMENT_LOST,
}
_BEGINNING, _END = -2, -1  # librdkafka's logical offsets


def translate(err: KafkaError, what: str) -> TransportError:
    """A librdkafka error as the transport's own type, by its error class."""
    text = f"{what}: {err.name()}: {err.str()}"
    if err.fatal():
        return FatalTransportError(text)
    if err.txn_requires_abort():
        return TransactionAbortError(text)
    if err.code() in _REJECTED:
        return CommitRejectedError(text)
    if err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
        return MessageTooLargeError(text)
    exc = TransportError(text)
    exc.retriable = err.retriable()
    return exc


def _raised(exc: KafkaException, what: str) -> TransportError:
    err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
    return translate(err, what) if err is not None else TransportError(f"{what}: {exc}")


def client_config(settings: KafkaSettings) -> dict:
    """Connection and security settings, as librdkafka names them."""
    conf = {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": settings.client_id,
        "security.protocol": settings.security_protocol.lower(),
        "socket.timeout.ms": settings.request_timeout_ms,
    }
    if settings.sasl_mechanism:
        conf["sasl.mechanism"] = settings.sasl_mechanism
        conf["sasl.username"] = settings.sasl_username or ""
        conf["sasl.password"] = (
            settings.sasl_password.get_secret_value() if settings.sasl_password else ""
        )
    for ours, theirs in (
        ("ssl_cafile", "ssl.ca.location"),
        ("ssl_certfile", "ssl.certificate.location"),
        ("ssl_keyfile", "ssl.key.location"),
    ):
        if getattr(settings, ours):
            conf[theirs] = getattr(settings, ours)
    if settings.ssl_password:
        conf["ssl.key.password"] = settings.ssl_password.get_secret_value()
    return conf


def _start(tp, starts: Offsets | None, reset: str) -> int:
    """``resume_offset``, or librdkafka's logical offset for the reset policy."""
    offset = resume_offset(
        tp.offset if tp.offset >= 0 else None, (starts or {}).get((tp.topic, tp.partition))
    )
    if offset is not None:
        return offset
    return _BEGINNING if reset == "earliest" else _END


def _keys(tps) -> set[TopicPartitionKey]:
    return {(tp.topic, tp.partition) for tp in tps}


class ConfluentConsumer:
    commits_on_revoke = True

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        group_id: str | None = None,
        read_committed: bool | None = None,
    ) -> None:
        conf = {
            **client_config(settings),
            "group.id": group_id or settings.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": settings.auto_offset_reset,
            "max.poll.interval.ms": settings.max_poll_interval_ms,
            "session.timeout.ms": settings.session_timeout_ms,
            "heartbeat.interval.ms": settings.heartbeat_interval_ms,
            "partition.assignment.strategy": settings.assignment_strategy,
            "isolation.level": "read_committed"
            if (settings.exactly_once if read_committed is None else read_committed)
            else "read_uncommitted",
        }
        if settings.group_instance_id:
            conf["group.instance.id"] = settings.group_instance_id
        self._c = Consumer(conf, logger=log)
        self._topic = settings.input_topic
        self._timeout_s = settings.request_timeout_ms / 1000
        self._reset = settings.auto_offset_reset
        self._cooperative = settings.assignment_strategy == "cooperative-sticky"
        self._owned: set[TopicPartitionKey] = set()
        self._holding = False
        self._listener: Rebalance | None = None

    def subscribe(self, listener: Rebalance, topic: str | None = None) -> None:
        self._listener = listener
        self._c.subscribe(
            [topic or self._topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    # -- rebalance callbacks (inside consume, on the consuming thread) --------------------------

    def _on_assign(self, consumer, tps) -> None:
        if self._cooperative:
            consumer.incremental_assign(tps)
        else:
            consumer.assign(tps)
        added = _keys(tps)
        self._owned |= added
        if (
            tps
        ):  # librdkafka keeps a partition's pause across unassign and assign: set it either way
            (consumer.pause if self._holding else consumer.resume)(tps)
        if self._listener is not None and (added or not self._cooperative):
            self._listener.on_assigned(added)

    def _on_revoke(self, consumer, tps) -> None:
        gone = _keys(tps)
        try:
            if self._listener is not None and gone:
                self._listener.on_revoked(gone)  # still owned here: finished work may be committed
        finally:
            self._unassign(consumer, tps, gone)

    def _on_lost(self, consumer, tps) -> None:
        gone = _keys(tps)
        try:
            if self._listener is not None and gone:
                self._listener.on_lost(gone)
        finally:
            self._unassign(consumer, tps, gone)

    def _unassign(self, consumer, tps, gone: set[TopicPartitionKey]) -> None:
        if self._cooperative:
            consumer.incremental_unassign(tps)
        else:
            consumer.unassign()
        self._owned -= gone

    # -- the interface ---------------------------------------------------------------------------

    def consume(
        self, max_records: int, timeout_s: float
    ) -> list[Record]:  # plain tuples, in Record's order
        """What is fetched now; if nothing is, wait up to ``timeout_s`` for the first record only
        (``consume(n, t)`` would hold a trickle back until ``n`` arrive or ``t`` passes)."""
        messages = self._c.consume(max_records, 0)
        if not messages and timeout_s > 0:
            messages = self._c.consume(1, timeout_s)
            if messages and max_records > 1:
                messages += self._c.consume(max_records - 1, 0)
        out = []
        for m in messages:
            err = m.error()
            if err is not None:
                if err.fatal():
                    raise translate(err, "consuming")
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning(
                        "consumer error on %s [%s]: %s", m.topic(), m.partition(), err.str()
                    )
                continue
            out.append((m.topic(), m.partition(), m.offset(), m.timestamp()[1], m.key(), m.value()))
        # plain tuples as Record types them: librdkafka sets the topic, partition and offset of
        # every record without an error (its stubs allow None for a Message built by hand)
        return cast("list[Record]", out)

    def assignment(self) -> set[TopicPartitionKey]:
        return set(self._owned)

    def settled(self) -> bool:
        """Assignment changes are reported inside consume as they happen: none is ever pending."""
        return True

    def hold(self, paused: bool) -> None:
        if paused == self._holding:
            return
        self._holding = paused
        tps = [TopicPartition(t, p) for t, p in self._owned]
        if tps:
            (self._c.pause if paused else self._c.resume)(tps)

    def rewind(self, tps: set[TopicPartitionKey], starts: Offsets | None = None) -> None:
        owned = [TopicPartition(t, p) for t, p in sorted(tps & self._owned)]
        if not owned:
            return
        try:
            committed = self._c.committed(owned, timeout=self._timeout_s)
            for tp in committed:
                if tp.error is not None:
                    raise translate(
                        tp.error, f"reading the committed offset of {tp.topic} [{tp.partition}]"
                    )
                self._c.seek(
                    TopicPartition(tp.topic, tp.partition, _start(tp, starts, self._reset))
                )
        except KafkaException as exc:
            raise _raised(exc, "reading committed offsets") from None

    def commit(self, offsets: Offsets) -> None:
        if not offsets:
            return
        try:
            result = self._c.commit(
                offsets=[TopicPartition(t, p, off) for (t, p), off in offsets.items()],
                asynchronous=False,
            )
        except KafkaException as exc:
            raise _raised(exc, "committing offsets") from None
        failed = [tp.error for tp in result or [] if tp.error is not None]
        if failed:
            raise translate(failed[0], f"committing offsets of {len(failed)} partitions")

    def lag(self) -> dict[TopicPartitionKey, int]:
        if not self._owned:
            return {}
        tps = [TopicPartition(t, p) for t, p in self._owned]
        out: dict[TopicPartitionKey, int] = {}
        try:
            positions = self._c.position(tps)
        except KafkaException:
            return out
        for tp in positions:
            _, high = self._c.get_watermark_offsets(tp, cached=True) or (None, None)
            if high is None or high < 0 or tp.offset < 0:
                continue
            out[(tp.topic, tp.partition)] = max(0, high - tp.offset)
        return out

    def committed(self, tps: set[TopicPartitionKey]) -> dict[TopicPartitionKey, int | None]:
        try:
            got = self._c.committed(
                [TopicPartition(t, p) for t, p in sorted(tps)], timeout=self._timeout_s
            )
        except KafkaException as exc:
            raise _raised(exc, "reading committed offsets") from None
        for tp in got:
            if tp.error is not None:
                raise translate(
                    tp.error, f"reading the committed offset of {tp.topic} [{tp.partition}]"
                )
        return {(tp.topic, tp.partition): tp.offset if tp.offset >= 0 else None for tp in got}

    def group_metadata(self) -> object:
        return self._c.consumer_group_metadata()

    def close(self) -> None:
        self._c.close()


class ConfluentProducer:
    def __init__(
        self,
        settings: KafkaSettings,
        *,
        transactional_id: str | None = None,
        client_suffix: str = "",
    ) -> None:
        conf = {
            **client_config(settings),
            "acks": "all",
            "enable.idempotence": True,  # broker-side retries cannot reorder or duplicate a partition's messages
            "linger.ms": settings.linger_ms,
            "message.max.bytes": settings.max_message_bytes,
            "partitioner": "murmur2_random",
            "request.timeout.ms": settings.request_timeout_ms,
        }
        if client_suffix:
            conf["client.id"] = settings.client_id + client_suffix
        if transactional_id:
            conf.update(
                {
                    "transactional.id": transactional_id,
                    "transaction.timeout.ms": settings.transaction_timeout_ms,
                }
            )
        self._p = Producer(conf, logger=log)
        self._timeout_s = settings.request_timeout_ms / 1000
        self.transactional = transactional_id is not None
        if self.transactional:
            try:
                self._p.init_transactions(
                    self._timeout_s
                )  # fences an earlier producer with this id
                self._p.begin_transaction()
            except KafkaException as exc:
                raise _raised(exc, "starting transactions") from None

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list,
        on_delivery: OnDelivery,
    ) -> None:
        """``on_delivery`` is handed to librdkafka as it is (no wrapper per message): it is called
        with librdkafka's ``KafkaError`` (or None) and the message."""
        try:
            self._p.produce(topic, value, key, headers=headers, on_delivery=on_delivery)
        except BufferError:  # the local queue is full: serve deliveries, then try again
            self._produce_when_room(topic, key, value, headers, on_delivery)
        except KafkaException as exc:
            raise _raised(exc, f"producing to {topic}") from None

    def _produce_when_room(
        self, topic, key, value, headers, on_delivery, timestamp_ms: int = 0, partition: int = -1
    ) -> None:
        full = Deadline(self._timeout_s)
        while not full.expired():
            self._p.poll(0.05)
            try:
                self._p.produce(
                    topic,
                    value,
                    key,
                    headers=headers,
                    on_delivery=on_delivery,
                    timestamp=timestamp_ms,
                    partition=partition,
                )
                return
            except BufferError:
                continue
            except KafkaException as exc:
                raise _raised(exc, f"producing to {topic}") from None
        raise TransportError(f"the producer's queue stayed full for {self._timeout_s:.0f} s")

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
        def delivered(err, msg) -> None:
            if err is not None:
                on_sent(translate(err, f"delivering to {topic}"), -1, -1, -1)
            else:
                on_sent(None, msg.partition(), msg.offset(), msg.timestamp()[1])

        chosen = -1 if partition is None else partition  # -1: librdkafka's partitioner picks
        try:
            self._p.produce(
                topic,
                value,
                key,
                headers=headers,  # type: ignore[arg-type]  # confluent-kafka's stubs want List[Tuple[str, str | bytes | None]]: list is invariant, so list[tuple[str, bytes]] is refused though librdkafka only reads it
                on_delivery=delivered,
                timestamp=timestamp_ms or 0,
                partition=chosen,
            )
        except BufferError:
            self._produce_when_room(
                topic, key, value, headers, delivered, timestamp_ms or 0, chosen
            )
        except KafkaException as exc:
            raise _raised(exc, f"producing to {topic}") from None

    def warm(self, topic: str) -> None:
        try:
            self._p.list_topics(topic, timeout=self._timeout_s)
        except KafkaException as exc:
            raise _raised(exc, f"reading the metadata of {topic}") from None

    def reachable(self, timeout_s: float) -> None:
        try:
            self._p.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            raise _raised(exc, "reading cluster metadata") from None

    def poll(self) -> None:
        self._p.poll(0)

    def flush(self, timeout_s: float) -> None:
        left = self._p.flush(timeout_s)
        if left:
            raise TransportError(f"{left} messages not acknowledged within {timeout_s:.0f} s")

    def commit_transaction(self, offsets: Offsets, group_metadata: object) -> None:
        """A retriable failure (e.g. a timeout) is retried, as librdkafka requires: an abort is
        refused while a commit is in progress. Anything else is raised for the loop to abort."""
        if offsets:
            tps = [TopicPartition(t, p, off) for (t, p), off in offsets.items()]
            self._retried(
                lambda: self._p.send_offsets_to_transaction(tps, group_metadata, self._timeout_s)
            )
        self._retried(lambda: self._p.commit_transaction(self._timeout_s))
        try:
            self._p.begin_transaction()
        except KafkaException as exc:
            raise _raised(exc, "opening the next transaction") from None

    def _retried(self, call, attempts: int = 3) -> None:
        for attempt in range(attempts):
            try:
                call()
                return
            except KafkaException as exc:
                err = _raised(exc, "committing the transaction")
                if not err.retriable or attempt == attempts - 1:
                    raise err from None
                log.warning("%s; retrying", err)

    def abort_transaction(self) -> None:
        try:
            self._p.abort_transaction(self._timeout_s)
            self._p.begin_transaction()
        except KafkaException as exc:
            raise _raised(exc, "aborting the transaction") from None

    def close(self, timeout_s: float = 10.0) -> None:
        self._p.flush(timeout_s)


class ConfluentReader:
    """Whole topics without a group. librdkafka reports reaching a partition's end as an event
    (``enable.partition.eof``), at the end its last fetch reported (the last stable offset for
    ``read_committed``): a partition is at its end from that event until a record of it arrives."""

    def __init__(
        self,
        settings: KafkaSettings,
        topics: list[str],
        *,
        read_committed: bool = False,
        since_ms: int | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        conf = {
            **client_config(settings),
            "group.id": f"{settings.client_id}-reader",  # required by the client; never joined or committed
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
        }
        self._c = Consumer(conf, logger=log)
        deadline = Deadline(timeout_s)
        tps = [tp for topic in topics for tp in self._partitions(topic, deadline)]
        self._ends: set[TopicPartitionKey] = set()
        self._all = _keys(tps)
        if since_ms is not None and tps:
            tps = self._from_time(tps, since_ms, deadline)
        self._c.assign(tps)

    def _partitions(self, topic: str, deadline: Deadline) -> list[TopicPartition]:
        while True:
            try:
                md = self._c.list_topics(topic, timeout=max(0.5, deadline.remaining())).topics.get(
                    topic
                )
                if md is not None and md.error is None and md.partitions:
                    return [TopicPartition(topic, p, _BEGINNING) for p in sorted(md.partitions)]
            except KafkaException:
                pass
            if deadline.expired():
                return []
            time.sleep(0.2)

    def _from_time(
        self, tps: list[TopicPartition], since_ms: int, deadline: Deadline
    ) -> list[TopicPartition]:
        """The first offset stamped at or after ``since_ms``; where the broker cannot say, the
        beginning (reading more is harmless, skipping is not)."""
        try:
            found = self._c.offsets_for_times(
                [TopicPartition(tp.topic, tp.partition, since_ms) for tp in tps],
                timeout=max(1.0, deadline.remaining()),
            )
        except KafkaException:
            return tps
        return [
            TopicPartition(
                tp.topic,
                tp.partition,
                tp.offset if tp.error is None and tp.offset >= 0 else _BEGINNING,
            )
            for tp in found
        ]

    def read(self, timeout_s: float) -> list[Message]:
        messages = self._c.consume(10_000, 0)
        if not messages and timeout_s > 0:
            messages = self._c.consume(1, timeout_s)
        out = []
        for m in messages:
            err = m.error()
            topic, partition = m.topic(), m.partition()
            if err is None:
                offset = m.offset()
                # librdkafka sets all three on every record without an error
                assert topic is not None and partition is not None and offset is not None
                self._ends.discard((topic, partition))
                out.append(
                    Message(
                        topic,
                        partition,
                        offset,
                        m.timestamp()[1],
                        m.key(),
                        m.value(),
                        # a consumed record's headers: a list of (name, bytes), never the dict
                        # form the stubs also allow for producing
                        cast("list[tuple[str, bytes]]", m.headers() or []),
                    )
                )
            elif err.code() == KafkaError._PARTITION_EOF:
                assert topic is not None and partition is not None  # the event names its partition
                self._ends.add((topic, partition))
            elif err.fatal():
                raise translate(err, "reading")
        return out

    def at_end(self) -> bool:
        return self._ends >= self._all

    def close(self) -> None:
        self._c.close()
