"""The producer side: sends with delivery futures; the checkpoint resolves them after a flush.

With ``exactly_once`` the producer is transactional: a transaction is always open; the checkpoint
ends it with the input offsets (``commit_transaction``) and the worker aborts it when work must be
redone (a rebalance, a failed send). Readers with ``read_committed`` never see aborted outputs.
"""

from __future__ import annotations

import logging
import socket

from kafka import KafkaProducer
from kafka.producer.future import FutureRecordMetadata

from worker.config import KafkaSettings
from worker.kafka_options import client_options, offsets_to_commit
from worker.publish.codec import OutMessage

log = logging.getLogger(__name__)


def transactional_id(settings: KafkaSettings) -> str:
    return settings.transactional_id or f"{settings.group_id}-{socket.gethostname()}-{settings.client_id}"


class Publisher:
    def __init__(self, settings: KafkaSettings) -> None:
        extra = {}
        if settings.exactly_once:
            extra = {"transactional_id": transactional_id(settings), "transaction_timeout_ms": settings.transaction_timeout_ms}
        self._producer = KafkaProducer(
            **client_options(settings),
            acks="all",
            enable_idempotence=True,  # broker-side retries cannot reorder or duplicate a partition's messages
            linger_ms=settings.linger_ms,
            max_request_size=settings.max_message_bytes,
            **extra,
        )
        self.transactional = settings.exactly_once
        if self.transactional:
            self._producer.init_transactions()  # fences an earlier producer with this id, aborting its open transaction
            self._producer.begin_transaction()
            log.info("exactly-once: transactional id %s", extra["transactional_id"])

    def send(self, topic: str, msg: OutMessage) -> FutureRecordMetadata:
        return self._producer.send(topic, key=msg.key, value=msg.value, headers=msg.headers)

    def flush(self, timeout_s: float) -> None:
        self._producer.flush(timeout=timeout_s)

    def commit_transaction(self, offsets: dict[tuple[str, int], int], group_metadata) -> None:
        """Commit the open transaction together with these input offsets; open the next one."""
        if offsets:
            self._producer.send_offsets_to_transaction(offsets_to_commit(offsets), group_metadata)
        self._producer.commit_transaction()
        self._producer.begin_transaction()

    def abort_transaction(self) -> None:
        """Discard everything sent since the last commit; open the next transaction."""
        self._producer.abort_transaction()
        self._producer.begin_transaction()

    def close(self, timeout_s: float = 10.0) -> None:
        self._producer.close(timeout=timeout_s)
