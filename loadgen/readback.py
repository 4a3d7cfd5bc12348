"""Read a whole topic back (outputs, dead letters) without joining a consumer group, and a group's
committed offsets: through the worker's transport (``EMBED_KAFKA__CLIENT``), so the load generator
and the tests need no client of their own.

The end of each partition is the end the broker reported with its last fetch (see
``worker.transport.base.Reader``): some Kafka-protocol brokers answer ListOffsets(latest) wrongly.
"""

from __future__ import annotations

from worker.config import KafkaSettings
from worker.deadline import Deadline
from worker.transport import Message, transport


def read_topic(
    settings: KafkaSettings,
    topic: str,
    *,
    expect: int | None = None,
    timeout_s: float = 30.0,
    committed_only: bool = False,
) -> list[Message]:
    """Every record of ``topic``, once each partition's end is reached (and ``expect`` records, if
    given); with ``committed_only``, as a ``read_committed`` reader sees it (no aborted outputs)."""
    deadline = Deadline(timeout_s)
    reader = transport(settings).reader(
        settings, [topic], read_committed=committed_only, timeout_s=timeout_s
    )
    try:
        records: list[Message] = []
        while not deadline.expired():
            records.extend(reader.read(0.5))
            if reader.at_end() and (expect is None or len(records) >= expect):
                break
        return records
    finally:
        reader.close()


def committed_offsets(
    settings: KafkaSettings, group: str, topic: str, partitions: list[int]
) -> dict[int, int | None]:
    """The group's committed offset per partition (None where it never committed)."""
    consumer = transport(settings).consumer(settings, group_id=group)
    try:
        return {
            p: off for (_, p), off in consumer.committed({(topic, p) for p in partitions}).items()
        }
    finally:
        consumer.close()
