"""Read a whole topic back (outputs, dead letters) without joining a consumer group.

The end of each partition is taken from the high watermark that fetch responses carry
(``consumer.highwater``), which is right on every broker; some Kafka-protocol brokers answer
ListOffsets(latest) wrongly, so ``end_offsets()`` is not used.
"""

from __future__ import annotations

import time

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from worker.config import KafkaSettings
from worker.deadline import Deadline
from worker.kafka_options import client_options


def topic_partitions(consumer: KafkaConsumer, topic: str, deadline: Deadline) -> list[TopicPartition]:
    """The topic's partitions, waiting for its metadata until ``deadline`` (empty if it never shows)."""
    partitions = consumer.partitions_for_topic(topic)
    while partitions is None and not deadline.expired():
        time.sleep(0.2)
        partitions = consumer.partitions_for_topic(topic)
    return [TopicPartition(topic, p) for p in sorted(partitions or [])]


def read_topic(
    settings: KafkaSettings, topic: str, *, expect: int | None = None, timeout_s: float = 30.0, committed_only: bool = False
) -> list[ConsumerRecord]:
    """Every record of ``topic``, once each partition's end is reached (and ``expect`` records, if
    given); with ``committed_only``, as a ``read_committed`` reader sees it (no aborted outputs)."""
    isolation = "read_committed" if committed_only else "read_uncommitted"
    consumer = KafkaConsumer(**client_options(settings), group_id=None, enable_auto_commit=False, auto_offset_reset="earliest", isolation_level=isolation)
    try:
        deadline = Deadline(timeout_s)
        tps = topic_partitions(consumer, topic, deadline)
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[ConsumerRecord] = []
        while not deadline.expired():
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
            # a read_committed reader also reaches the high watermark once no transaction is open
            at_end = all(consumer.highwater(tp) is not None and consumer.position(tp) >= consumer.highwater(tp) for tp in tps)
            if at_end and (expect is None or len(records) >= expect):
                break
        return records
    finally:
        consumer.close()


def committed_offsets(settings: KafkaSettings, group: str, topic: str, partitions: list[int]) -> dict[int, int | None]:
    """The group's committed offset per partition (None where it never committed)."""
    consumer = KafkaConsumer(**client_options(settings), group_id=group, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) for p in partitions}
    finally:
        consumer.close()
