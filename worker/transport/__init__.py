"""Kafka I/O behind one interface (``base``): confluent-kafka (librdkafka) by default, kafka-python
on request (``EMBED_KAFKA__CLIENT``). Only this package imports a Kafka client."""

from __future__ import annotations

from worker.config import KafkaSettings
from worker.transport.base import (
    Consumer,
    Message,
    Producer,
    Reader,
    Rebalance,
    Record,
    TopicPartitionKey,
    Transport,
)

__all__ = [
    "Consumer",
    "Message",
    "Producer",
    "Reader",
    "Rebalance",
    "Record",
    "TopicPartitionKey",
    "Transport",
    "resolve_client",
    "transport",
]


def resolve_client(setting: str) -> str:
    """``auto`` is confluent-kafka when it imports (it is a core dependency), else kafka-python."""
    if setting != "auto":
        return setting
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        return "kafka-python"
    return "confluent"


def transport(settings: KafkaSettings) -> Transport:
    name = resolve_client(settings.client)
    if name == "confluent":
        from worker.transport.confluent import ConfluentConsumer, ConfluentProducer, ConfluentReader

        return Transport(name, ConfluentConsumer, ConfluentProducer, ConfluentReader)
    from worker.transport.kafka_python import (
        KafkaPythonConsumer,
        KafkaPythonProducer,
        KafkaPythonReader,
    )

    return Transport(name, KafkaPythonConsumer, KafkaPythonProducer, KafkaPythonReader)
