"""Build the worker's parts from settings, run it, and close everything in order."""

from __future__ import annotations

import logging
import threading

from worker.config import Settings
from worker.errors import BrokerUnavailableError, ConfigError
from worker.runner import RunStats, Worker

log = logging.getLogger(__name__)


def make_dedup(settings: Settings, fingerprint: str):
    from worker.dedup.store import DedupStore, NoDedup

    if not settings.redis.enabled:
        log.info("dedup off (EMBED_REDIS__URL unset or EMBED_REDIS__DEDUP=false)")
        return NoDedup()
    store = DedupStore(settings.redis, fingerprint)
    try:
        store.ping()
    except Exception as exc:
        log.warning("Redis not reachable at start-up (%s); dedup fails open until it is", type(exc).__name__)
    return store


def run_worker(settings: Settings, stop: threading.Event, exit_when_idle_s: float | None = None) -> RunStats:
    from kafka.errors import KafkaTimeoutError

    from worker.consume.intake import Intake
    from worker.encode import load_encoder
    from worker.publish.producer import Publisher

    try:  # the broker first: a wrong address fails before the model is loaded
        publisher = Publisher(settings.kafka)
    except KafkaTimeoutError as exc:
        raise BrokerUnavailableError(
            f"no Kafka broker reachable at {settings.kafka.bootstrap_servers} (EMBED_KAFKA__BOOTSTRAP_SERVERS): {exc}"
        ) from None
    try:
        encoder = load_encoder(settings.model)
        if settings.batch.max_tokens is not None and settings.batch.max_tokens < encoder.info.max_length:
            raise ConfigError(
                f"invalid setting EMBED_BATCH__MAX_TOKENS: {settings.batch.max_tokens} is below the model's max length "
                f"{encoder.info.max_length}, so a full-length document could never be batched"
            )
        dedup = make_dedup(settings, encoder.info.fingerprint)
        intake = Intake(settings.kafka)
    except BaseException:
        publisher.close()
        raise
    try:
        return Worker(settings, encoder, intake, publisher, dedup, stop).run(exit_when_idle_s)
    finally:
        intake.close()
        publisher.close()
        dedup.close()
