"""The producer side: sends with delivery futures; the checkpoint resolves them after a flush."""

from __future__ import annotations

import logging

from kafka import KafkaProducer
from kafka.producer.future import FutureRecordMetadata

from worker.config import KafkaSettings
from worker.kafka_options import client_options
from worker.publish.codec import OutMessage

log = logging.getLogger(__name__)


class Publisher:
    def __init__(self, settings: KafkaSettings) -> None:
        self._producer = KafkaProducer(
            **client_options(settings),
            acks="all",
            enable_idempotence=True,  # broker-side retries cannot reorder or duplicate a partition's messages
            linger_ms=settings.linger_ms,
            max_request_size=settings.max_message_bytes,
        )

    def send(self, topic: str, msg: OutMessage) -> FutureRecordMetadata:
        return self._producer.send(topic, key=msg.key, value=msg.value, headers=msg.headers)

    def flush(self, timeout_s: float) -> None:
        self._producer.flush(timeout=timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        self._producer.close(timeout=timeout_s)
