"""What the main loop observes: each batch handed to the producer (``record_sent``: run stats and
metrics), and, between batches, consumer lag, accelerator memory, Redis errors, rebalances, and one
progress line per interval at INFO."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from worker.observe.metrics import Metrics

log = logging.getLogger("worker.progress")


class Progress:
    def __init__(
        self,
        metrics: Metrics,
        consumer,
        encoder,
        dedup,
        interval_s: float,
        rebalances: Callable[[], int],
    ) -> None:
        self._m = metrics
        self._consumer = consumer
        self._rebalances = rebalances
        self._encoder = encoder
        self._dedup = dedup
        self._interval_s = interval_s
        self._seen_rebalances = 0
        self._seen_redis_errors = 0
        self._seen_unchecked = 0
        self._lag_series: set[tuple[str, str]] = set()
        self._last_log = time.monotonic()
        self._last_embedded = 0

    def tick(self, stats) -> None:
        lag = self._consumer.lag()
        series = {(t, str(p)) for t, p in lag}
        for stale in self._lag_series - series:  # partitions no longer owned stop reporting
            self._m.consumer_lag.remove(*stale)
        self._lag_series = series
        for (topic, partition), behind in lag.items():
            self._m.consumer_lag.labels(topic=topic, partition=str(partition)).set(behind)

        rebalances = self._rebalances()
        self._m.rebalances.inc(rebalances - self._seen_rebalances)
        self._seen_rebalances = rebalances
        self._m.redis_errors.inc(self._dedup.errors - self._seen_redis_errors)
        self._seen_redis_errors = self._dedup.errors
        self._m.dedup_unchecked.inc(self._dedup.unchecked - self._seen_unchecked)
        self._seen_unchecked = self._dedup.unchecked

        memory = getattr(self._encoder, "device_memory", lambda: None)()
        if memory is not None:
            self._m.gpu_allocated.set(memory[0])
            self._m.gpu_reserved.set(memory[1])

        now = time.monotonic()
        if now - self._last_log >= self._interval_s:
            rate = (stats.embedded - self._last_embedded) / (now - self._last_log)
            log.info(
                "progress: %d embedded (%.1f/s), %d dedup hits, %d dead-lettered, %d deletes, lag %d",
                stats.embedded,
                rate,
                stats.dedup_hits,
                sum(stats.dead_lettered.values()),
                stats.deletes,
                sum(lag.values()),
                extra={
                    "embedded": stats.embedded,
                    "docs_per_s": round(rate, 2),
                    "lag": sum(lag.values()),
                },
            )
            self._last_log, self._last_embedded = now, stats.embedded


def record_sent(st, m: Metrics, s, docs: list) -> None:
    """Count one batch handed to the producer (``Sent``) in the run stats and the metrics. Every
    forward pass that produced vectors counts as a batch in the metrics, the parts of a batch split
    after running out of memory (or retried one by one after a model error) included, under the
    batch's flush reason; the run stats' batch count and latencies keep whole batches only."""
    enc = s.encoded
    for reason in s.dead_letters:
        st.dead_lettered[reason] += 1
        m.dlq.labels(reason=reason).inc()
    m.oom_splits.inc(enc.oom_splits)
    st.padded_tokens += enc.padded_tokens
    if not docs:
        return
    tokens = enc.real_tokens
    st.embedded += len(docs)
    st.tokens += tokens
    st.last_output = time.monotonic()
    m.documents.inc(len(docs))
    m.tokens.inc(tokens)
    m.stage_seconds.labels(stage="publish").observe(s.publish_s)
    reason = enc.batch.cut.reason.value
    for p in enc.passes:
        m.stage_seconds.labels(stage="forward").observe(p.seconds)
        m.batches.labels(reason=reason).inc()
        m.batch_size.observe(p.size)
        m.batch_tokens.observe(p.padded_tokens)
        m.batch_unpadded_tokens.observe(p.tokens)
        m.padding_efficiency.observe(p.padding_efficiency)
        log.debug(
            "batch: %d docs, %d tokens (%d padded), %s, padding efficiency %.2f",
            p.size,
            p.tokens,
            p.padded_tokens,
            reason,
            p.padding_efficiency,
        )
    if (
        enc.forward_s and not enc.failed and len(enc.parts) == 1
    ):  # a whole batch in one forward pass
        st.encode_s += enc.forward_s
        st.batch_seconds.append(enc.forward_s)
        st.batches += 1
