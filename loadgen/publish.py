"""Publish documents to the input topic as fast as the producer allows, keyed by document id."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable

from kafka import KafkaProducer

from worker.config import KafkaSettings
from worker.consume.decode import encode_document
from worker.kafka_options import client_options


@dataclass
class PublishReport:
    messages: int = 0
    bytes: int = 0
    seconds: float = 0.0
    end_offsets: dict[int, int] = field(default_factory=dict)  # partition -> last offset written + 1

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


def make_producer(settings: KafkaSettings) -> KafkaProducer:
    return KafkaProducer(**client_options(settings), acks="all", linger_ms=20, batch_size=256 * 1024, max_request_size=settings.max_message_bytes)


def publish(producer: KafkaProducer, topic: str, docs: Iterable[dict], *, op: str = "upsert") -> PublishReport:
    """Send every document and wait for all acknowledgements; raises if any send failed."""
    report = PublishReport()
    started = time.monotonic()
    futures = []
    for doc in docs:
        value = encode_document(doc["id"], doc.get("text"), op=doc.get("op", op), metadata=doc.get("metadata"))
        futures.append(producer.send(topic, key=doc["id"].encode("utf-8"), value=value))
        report.bytes += len(value)
    producer.flush()
    for f in futures:
        md = f.get(timeout=0)  # raises the send's error, if any
        report.end_offsets[md.partition] = max(report.end_offsets.get(md.partition, 0), md.offset + 1)
    report.messages = len(futures)
    report.seconds = time.monotonic() - started
    return report
