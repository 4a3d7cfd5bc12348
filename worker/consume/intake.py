"""The consumer side: one KafkaConsumer, used from the main thread only.

kafka-python runs rebalance listeners on its own event-loop thread, where blocking (a commit, a
flush) would stall heartbeats. The listener therefore only records what changed; the main loop
acts on it after each poll.
"""

from __future__ import annotations

import logging
import threading

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

from worker.config import KafkaSettings
from worker.kafka_options import client_options, offsets_to_commit

log = logging.getLogger(__name__)
TopicPartitionKey = tuple[str, int]
ASSIGNORS = {"range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor, "cooperative-sticky": CooperativeStickyAssignor}


class RebalanceEvents(ConsumerRebalanceListener):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._revoked: set[TopicPartitionKey] = set()
        self._assigned: set[TopicPartitionKey] = set()
        self.rebalances = 0

    def on_partitions_revoked(self, revoked) -> None:
        self._record(revoked, "revoked")

    def on_partitions_lost(self, lost) -> None:
        self._record(lost, "lost")

    def on_partitions_assigned(self, assigned) -> None:
        log.info("partitions assigned: %s", sorted(tp.partition for tp in assigned))
        with self._lock:
            self.rebalances += 1
            self._assigned.update((tp.topic, tp.partition) for tp in assigned)

    def _record(self, tps, what: str) -> None:
        if tps:
            log.info("partitions %s: %s", what, sorted(tp.partition for tp in tps))
        with self._lock:
            self._revoked.update((tp.topic, tp.partition) for tp in tps)

    def take_revoked(self) -> set[TopicPartitionKey]:
        with self._lock:
            revoked, self._revoked = self._revoked, set()
        return revoked

    def take_assigned(self) -> set[TopicPartitionKey]:
        with self._lock:
            assigned, self._assigned = self._assigned, set()
        return assigned


class Intake:
    def __init__(self, settings: KafkaSettings) -> None:
        self.events = RebalanceEvents()
        self._consumer = KafkaConsumer(
            **client_options(settings),
            group_id=settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset=settings.auto_offset_reset,
            max_poll_records=settings.max_poll_records,
            max_poll_interval_ms=settings.max_poll_interval_ms,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            partition_assignment_strategy=(ASSIGNORS[settings.assignment_strategy],),
            group_instance_id=settings.group_instance_id,
            isolation_level="read_committed" if settings.exactly_once else "read_uncommitted",
        )
        self._timeout_ms = settings.request_timeout_ms
        self._consumer.subscribe([settings.input_topic], listener=self.events)
        self._paused = False
        self._reset = settings.auto_offset_reset

    def poll(self, timeout_s: float) -> list[ConsumerRecord]:
        batches = self._consumer.poll(timeout_ms=max(0, int(timeout_s * 1000)))
        return [r for records in batches.values() for r in records]

    def assignment(self) -> set[TopicPartitionKey]:
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def rewind(self, tps: set[TopicPartitionKey]) -> None:
        """Read these partitions again from the group's committed offset (or the reset policy's
        end when none was committed), whatever position the consumer kept. Raises a
        ``KafkaError`` (e.g. a timeout while the broker is away) if an offset cannot be fetched."""
        for topic, partition in sorted(tps):
            tp = TopicPartition(topic, partition)
            if tp not in self._consumer.assignment():
                continue  # already moved on by a later rebalance
            committed = self._consumer.committed(tp, timeout_ms=self._timeout_ms)
            if committed is not None:
                self._consumer.seek(tp, committed)
            elif self._reset == "earliest":
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek_to_end(tp)

    def lag(self) -> dict[TopicPartitionKey, int]:
        """Messages behind the high watermark, per assigned partition with a known watermark."""
        out = {}
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            if high is None:
                continue
            try:
                position = self._consumer.position(tp, timeout_ms=self._timeout_ms)
            except KafkaError:  # a position still being looked up while the broker is away
                continue
            if position is not None:
                out[(tp.topic, tp.partition)] = max(0, high - position)
        return out

    def hold(self, paused: bool) -> None:
        """Pause (or resume) every assigned partition; the consumer keeps polling for heartbeats.

        Newly assigned partitions start unpaused, so pausing is re-applied on every call."""
        assigned = self._consumer.assignment()
        if paused:
            self._consumer.pause(*assigned)
        elif self._paused:
            self._consumer.resume(*self._consumer.paused())
        self._paused = paused

    def commit(self, offsets: dict[TopicPartitionKey, int]) -> None:
        """Synchronous commit of ``offset`` (the next offset to read) per partition."""
        self._consumer.commit(offsets_to_commit(offsets), timeout_ms=self._timeout_ms)

    def group_metadata(self):
        """The consumer's group generation, for a transactional offset commit (zombie fencing)."""
        return self._consumer.group_metadata()

    def close(self) -> None:
        self._consumer.close(autocommit=False)
