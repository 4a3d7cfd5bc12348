"""Every Prometheus metric the worker exports, built against an injectable registry.

Names are ``embed_*`` in base units (seconds, bytes, ``_total`` for counters). Buckets are explicit:
powers of two for sizes, ×1.5 steps for durations (as text-embeddings-inference does).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Sequence
from functools import partial

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

STAGES = ("decode", "tokenize", "queue_wait", "forward", "publish", "commit")
FLUSH_REASONS = ("token_budget", "size", "deadline", "drain")


def _geometric(start: float, factor: float, count: int) -> list[float]:
    return [round(start * factor**i, 6) for i in range(count)]


SIZE_BUCKETS = [2**i for i in range(0, 11)]  # 1 … 1024 documents
TOKEN_BUCKETS = [2**i for i in range(4, 18)]  # 16 … 131072 tokens
DURATION_BUCKETS = _geometric(0.0005, 1.5, 30)  # 0.5 ms … ~64 s
LATENCY_BUCKETS = _geometric(0.01, 1.5, 30)  # 10 ms … ~21 min
EFFICIENCY_BUCKETS = [0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 1.0]


def observe_many(histogram: Histogram, values: Sequence[float]) -> None:
    """``histogram.observe(v)`` for each value, with one increment per bucket touched instead of
    a walk over the buckets and a lock per value (a batch's latencies, thousands a second).
    Reaches into the histogram's internals (bounds, bucket and sum values: unchanged across
    prometheus_client releases, and a test compares the result with ``observe``); a histogram
    without them is observed value by value."""
    bounds, buckets, total = (
        getattr(histogram, name, None) for name in ("_upper_bounds", "_buckets", "_sum")
    )
    if bounds is None or buckets is None or total is None:
        for v in values:
            histogram.observe(v)
        return
    for bucket, n in Tally(
        map(partial(bisect_left, bounds), values)
    ).items():  # the first bound >= v, as observe picks
        buckets[bucket].inc(n)
    total.inc(math.fsum(values))


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        self.input_messages = Counter(
            "embed_input_messages_total",
            "Records taken from the input topic (a re-read counts again): reconciles with vectors, deletes, dedup hits and dead letters.",
            registry=r,
        )
        self.documents = Counter(
            "embed_documents_total",
            "Vectors embedded and published: one per document, or one per chunk.",
            registry=r,
        )
        self.tokens = Counter(
            "embed_tokens_total", "Tokens embedded (after truncation, without padding).", registry=r
        )
        self.deletes = Counter("embed_deletes_total", "Delete events published.", registry=r)
        # One forward pass that produced vectors is one batch: a batch split after running out of
        # memory counts each part that ran (under the batch's flush reason), not the pass that failed.
        self.batches = Counter(
            "embed_batches_total",
            "Forward passes that produced vectors, by what closed the batch (the parts of a split batch count each).",
            ["reason"],
            registry=r,
        )
        self.batch_size = Histogram(
            "embed_batch_size",
            "Documents per forward pass: rows of the padded input tensor (a chunk is one row).",
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.batch_tokens = Histogram(
            "embed_batch_tokens",
            "Tokens per forward pass including padding: rows × the longest row's tokens.",
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.batch_unpadded_tokens = Histogram(
            "embed_batch_unpadded_tokens",
            "Tokens per forward pass without padding: the sum of the rows' tokens.",
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.padding_efficiency = Histogram(
            "embed_padding_efficiency_ratio",
            "Tokens without padding / tokens with padding, per forward pass.",
            buckets=EFFICIENCY_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "embed_stage_duration_seconds",
            "Time spent per stage of the data path.",
            ["stage"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.end_to_end_seconds = Histogram(
            "embed_end_to_end_latency_seconds",
            "From the input's Kafka timestamp to the output's acknowledgement.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "embed_consumer_lag_messages",
            "Messages behind the partition's high watermark.",
            ["topic", "partition"],
            registry=r,
        )
        self.commit_seconds = Histogram(
            "embed_commit_duration_seconds",
            "Latency of one synchronous offset commit.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.commit_failures = Counter(
            "embed_commit_failures_total",
            "Offset commits that failed or had an unknown outcome.",
            registry=r,
        )
        self.dedup_hits = Counter(
            "embed_dedup_hits_total",
            "Documents skipped: same content already embedded.",
            registry=r,
        )
        self.dedup_misses = Counter(
            "embed_dedup_misses_total",
            "Documents looked up in the dedup store and not found.",
            registry=r,
        )
        self.redis_errors = Counter(
            "embed_redis_errors_total", "Dedup store calls that failed.", registry=r
        )
        self.dedup_unchecked = Counter(
            "embed_dedup_unchecked_total",
            "Documents embedded without a dedup lookup because Redis was down (fail-open).",
            registry=r,
        )
        self.publish_failures = Counter(
            "embed_publish_failures_total",
            "Publish failures or flush timeouts; each re-reads the owned partitions from their commit.",
            registry=r,
        )
        self.dlq = Counter(
            "embed_dlq_messages_total", "Messages dead-lettered, by reason.", ["reason"], registry=r
        )
        self.oom_splits = Counter(
            "embed_oom_splits_total",
            "Batches (or parts of one) split in half after running out of accelerator memory; a document that does not fit alone "
            "is dead-lettered (reason out_of_memory) instead.",
            registry=r,
        )
        self.rebalances = Counter(
            "embed_rebalances_total", "Partition assignments received from the group.", registry=r
        )
        self.inflight = Gauge(
            "embed_inflight_documents", "Documents received and not yet committed.", registry=r
        )
        self.unmarked = Gauge(
            "embed_dedup_unmarked_documents",
            "Outputs acknowledged whose dedup marks could not be written yet (Redis down): their offsets are held.",
            registry=r,
        )
        self.gpu_allocated = Gauge(
            "embed_gpu_memory_allocated_bytes", "Accelerator memory held by tensors.", registry=r
        )
        self.gpu_reserved = Gauge(
            "embed_gpu_memory_reserved_bytes",
            "Accelerator memory reserved by the allocator.",
            registry=r,
        )
        self.model_load_seconds = Gauge(
            "embed_model_load_seconds", "Time to load and warm up the model.", registry=r
        )
        self.last_poll = Gauge(
            "embed_last_poll_timestamp_seconds",
            "Unix time of the main loop's last poll.",
            registry=r,
        )
        self.ready = Gauge(
            "embed_ready", "1 once the model is warm and the worker consumes.", registry=r
        )
        self.build = Info("embed_build", "Version and model configuration.", registry=r)
        for stage in STAGES:  # export every series from the start, at zero
            self.stage_seconds.labels(stage=stage)
        for reason in FLUSH_REASONS:
            self.batches.labels(reason=reason)
