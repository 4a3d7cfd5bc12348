"""Periodic observations the main loop makes between batches: consumer lag, accelerator memory,
Redis errors, rebalances, and one progress line per interval at INFO."""

from __future__ import annotations

import logging
import time

from worker.observe.metrics import Metrics

log = logging.getLogger("worker.progress")


class Progress:
    def __init__(self, metrics: Metrics, intake, encoder, dedup, interval_s: float) -> None:
        self._m = metrics
        self._intake = intake
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
        lag = self._intake.lag()
        series = {(t, str(p)) for t, p in lag}
        for stale in self._lag_series - series:  # partitions no longer owned stop reporting
            self._m.consumer_lag.remove(*stale)
        self._lag_series = series
        for (topic, partition), behind in lag.items():
            self._m.consumer_lag.labels(topic=topic, partition=str(partition)).set(behind)

        rebalances = self._intake.events.rebalances
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
                stats.embedded, rate, stats.dedup_hits, sum(stats.dead_lettered.values()), stats.deletes, sum(lag.values()),
                extra={"embedded": stats.embedded, "docs_per_s": round(rate, 2), "lag": sum(lag.values())},
            )
            self._last_log, self._last_embedded = now, stats.embedded
