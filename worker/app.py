"""Build the worker's parts from settings, run it, and close everything in order."""

from __future__ import annotations

import gc
import logging
import threading
import time

from worker import __version__
from worker.config import Settings
from worker.dedup.keys import output_fingerprint
from worker.encode.calibrate import batch_overhead_tokens, token_budget
from worker.errors import BrokerUnavailableError, ConfigError, TransportError
from worker.observe.health import Health
from worker.observe.metrics import Metrics
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
        log.warning(
            "Redis not reachable at start-up (%s); dedup fails open until it is", type(exc).__name__
        )
    return store


def freeze_heap() -> None:
    """Move everything start-up made (modules, the model, the tokenizer: millions of objects, none of
    them ever garbage) out of the collector's sight. Otherwise each full collection, which the hot
    path's allocations trigger every second or so, walks all of it while holding the GIL."""
    gc.collect()
    gc.freeze()


def run_worker(
    settings: Settings,
    stop: threading.Event,
    exit_when_idle_s: float | None = None,
    metrics: Metrics | None = None,
) -> RunStats:
    from worker.observe.server import serving

    metrics = metrics or Metrics()
    health = Health(settings.metrics.stall_after_s)
    with serving(
        settings.metrics, metrics.registry, health
    ):  # /healthz answers while the model loads; /readyz waits for warm-up
        return _run(settings, stop, exit_when_idle_s, metrics, health)


def _run(
    settings: Settings,
    stop: threading.Event,
    exit_when_idle_s: float | None,
    metrics: Metrics,
    health: Health,
) -> RunStats:
    from worker.encode import load_encoder
    from worker.publish.producer import transactional_id
    from worker.transport import transport

    client = transport(settings.kafka)
    log.info("Kafka client: %s", client.name)
    if settings.batch.lookahead is not None:
        log.warning(
            "EMBED_BATCH__LOOKAHEAD is deprecated and ignored: batches are chosen from everything waiting when the model has room"
        )
    tid = transactional_id(settings.kafka) if settings.kafka.exactly_once else None
    try:  # the broker first: a wrong address fails before the model is loaded
        producer = client.producer(settings.kafka, transactional_id=tid)
        if tid:
            log.info("exactly-once: transactional id %s", tid)
        try:
            producer.reachable(min(10.0, settings.kafka.request_timeout_ms / 1000))
        except TransportError:
            producer.close(0)
            raise
    except TransportError as exc:
        raise BrokerUnavailableError(
            f"no Kafka broker reachable at {settings.kafka.bootstrap_servers} (EMBED_KAFKA__BOOTSTRAP_SERVERS): {exc}"
        ) from None
    try:
        started = time.monotonic()
        encoder = load_encoder(settings.model)
        info = encoder.info
        if settings.batch.max_tokens is not None and settings.batch.max_tokens < info.max_length:
            raise ConfigError(
                f"invalid setting EMBED_BATCH__MAX_TOKENS: {settings.batch.max_tokens} is below the model's max length "
                f"{info.max_length}, so a full-length document could never be batched"
            )
        budget = token_budget(settings, encoder)
        overhead = (
            settings.batch.overhead_tokens
            if settings.batch.overhead_tokens is not None
            else batch_overhead_tokens(encoder, budget)
        )
        settings = settings.model_copy(
            update={
                "batch": settings.batch.model_copy(
                    update={"max_tokens": budget, "overhead_tokens": overhead}
                )
            }
        )
        metrics.model_load_seconds.set(time.monotonic() - started)
        metrics.build.info(
            {
                "version": __version__,
                "model": info.name,
                "dtype": info.dtype,
                "device": info.device,
                "dim": str(info.dim),
            }
        )
        health.warmed_up()
        metrics.ready.set(1)
        dedup = make_dedup(
            settings,
            output_fingerprint(
                info.fingerprint, settings.long_text.model_dump(), settings.output.vector_dtype
            ),
        )
        consumer = client.consumer(settings.kafka)
    except BaseException:
        producer.close()
        raise
    freeze_heap()
    try:
        return Worker(
            settings, encoder, consumer, producer, dedup, stop, metrics=metrics, health=health
        ).run(exit_when_idle_s)
    finally:
        consumer.close()
        producer.close()
        dedup.close()
