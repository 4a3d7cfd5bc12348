"""Connection options shared by every Kafka client the project makes (worker, sink, load generator)."""

from __future__ import annotations

from typing import Any

from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from worker.config import KafkaSettings


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in settings.bootstrap_servers.split(",") if s.strip()],
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": settings.request_timeout_ms,
    }
    if settings.sasl_mechanism:
        opts["sasl_mechanism"] = settings.sasl_mechanism
        opts["sasl_plain_username"] = settings.sasl_username
        opts["sasl_plain_password"] = settings.sasl_password.get_secret_value() if settings.sasl_password else None
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if getattr(settings, name):
            opts[name] = getattr(settings, name)
    if settings.ssl_password:
        opts["ssl_password"] = settings.ssl_password.get_secret_value()
    return opts


def offsets_to_commit(offsets: dict[tuple[str, int], int]) -> dict[TopicPartition, OffsetAndMetadata]:
    """(topic, partition) → next offset to read, as kafka-python's commit calls take it."""
    return {TopicPartition(t, p): OffsetAndMetadata(off, "", -1) for (t, p), off in offsets.items()}
