"""Write helm/embed-worker/dashboards/embed-worker.json, the Grafana dashboard for the worker's metrics.

Generated so that every query names a metric the worker exports (tests/deploy checks this).
"""

import json
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "helm" / "embed-worker" / "dashboards" / "embed-worker.json"
SEL = '{job=~"$job"}'

PANELS = [
    # (title, unit, [(legend, expr)], description)
    ("Documents embedded / s", "ops", [
        ("{{pod}}", f"sum by (pod) (rate(embed_documents_total{SEL}[$__rate_interval]))"),
        ("delete events", f"sum(rate(embed_deletes_total{SEL}[$__rate_interval]))"),
        ("input messages", f"sum(rate(embed_input_messages_total{SEL}[$__rate_interval]))"),
    ],
     "Throughput per replica. Multiply by the target drain time to size KEDA's lagThreshold. Input messages = vectors (whole documents) + delete events + dedup hits + dead letters, re-reads included."),
    ("Tokens embedded / s", "ops", [("all", f"sum(rate(embed_tokens_total{SEL}[$__rate_interval]))")], ""),
    ("Consumer lag (messages)", "short", [("partition {{partition}}", f"sum by (partition) (embed_consumer_lag_messages{SEL})")],
     "What KEDA scales on. A partition whose lag never falls is stuck: look at the DLQ and the logs."),
    ("End-to-end latency", "s", [
        ("p50", f"histogram_quantile(0.5, sum by (le) (rate(embed_end_to_end_latency_seconds_bucket{SEL}[$__rate_interval])))"),
        ("p99", f"histogram_quantile(0.99, sum by (le) (rate(embed_end_to_end_latency_seconds_bucket{SEL}[$__rate_interval])))"),
    ], "From the input's Kafka timestamp to the vector's acknowledgement: includes time spent in lag."),
    ("Stage duration p99", "s", [("{{stage}}", f"histogram_quantile(0.99, sum by (le, stage) (rate(embed_stage_duration_seconds_bucket{SEL}[$__rate_interval])))")],
     "forward dominating is healthy; queue_wait or publish dominating points at batching or the broker."),
    ("Batches by flush reason / s", "ops", [("{{reason}}", f"sum by (reason) (rate(embed_batches_total{SEL}[$__rate_interval]))")],
     "Mostly deadline means light load (small batches); mostly token_budget means the worker is saturated."),
    ("Batch size and padding efficiency", "short", [
        ("documents per batch", f"sum(rate(embed_batch_size_sum{SEL}[$__rate_interval])) / sum(rate(embed_batch_size_count{SEL}[$__rate_interval]))"),
        ("padding efficiency", f"sum(rate(embed_padding_efficiency_ratio_sum{SEL}[$__rate_interval])) / sum(rate(embed_padding_efficiency_ratio_count{SEL}[$__rate_interval]))"),
    ], "Real tokens / padded tokens. Low under light load (an idle model takes what waits); low while saturated: raise EMBED_BATCH__MAX_PENDING so more documents gather."),
    ("Padded tokens per batch", "short", [
        ("mean", f"sum(rate(embed_batch_tokens_sum{SEL}[$__rate_interval])) / sum(rate(embed_batch_tokens_count{SEL}[$__rate_interval]))"),
        ("p99", f"histogram_quantile(0.99, sum by (le) (rate(embed_batch_tokens_bucket{SEL}[$__rate_interval])))"),
    ], "Close to EMBED_BATCH__MAX_TOKENS when saturated; far below it under light load."),
    ("Dedup hit ratio", "percentunit", [("hits", f"sum(rate(embed_dedup_hits_total{SEL}[$__rate_interval])) / (sum(rate(embed_dedup_hits_total{SEL}[$__rate_interval])) + sum(rate(embed_dedup_misses_total{SEL}[$__rate_interval])))")],
     "Share of documents skipped because the same content was already embedded."),
    ("Dead letters / s", "ops", [("{{reason}}", f"sum by (reason) (rate(embed_dlq_messages_total{SEL}[$__rate_interval]))")],
     "Messages sent to the dead-letter topic, by reason."),
    ("Errors / s", "ops", [
        ("commit failures", f"sum(rate(embed_commit_failures_total{SEL}[$__rate_interval]))"),
        ("Redis errors", f"sum(rate(embed_redis_errors_total{SEL}[$__rate_interval]))"),
        ("embedded without dedup", f"sum(rate(embed_dedup_unchecked_total{SEL}[$__rate_interval]))"),
        ("publish failures", f"sum(rate(embed_publish_failures_total{SEL}[$__rate_interval]))"),
        ("OOM splits", f"sum(rate(embed_oom_splits_total{SEL}[$__rate_interval]))"),
        ("rebalances", f"sum(rate(embed_rebalances_total{SEL}[$__rate_interval]))"),
    ], "Redis errors: dedup lookups failing open (documents embedded without a lookup) or, with on_error=closed, consumption paused; marks not written hold their offsets; publish failures: the broker did not acknowledge, partitions re-read from their commit; frequent rebalances: flapping replicas."),
    ("Commit latency p99", "s", [("p99", f"histogram_quantile(0.99, sum by (le) (rate(embed_commit_duration_seconds_bucket{SEL}[$__rate_interval])))")], ""),
    ("In flight and ready replicas", "short", [
        ("in-flight documents", f"sum(embed_inflight_documents{SEL})"),
        ("held for their dedup marks", f"sum(embed_dedup_unmarked_documents{SEL})"),
        ("ready replicas", f"sum(embed_ready{SEL})"),
    ], "Held for their dedup marks: published, but Redis could not record them yet, so their offsets wait (and, past MAX_PENDING, consumption)."),
    ("GPU memory", "bytes", [
        ("allocated {{pod}}", f"embed_gpu_memory_allocated_bytes{SEL}"),
        ("reserved {{pod}}", f"embed_gpu_memory_reserved_bytes{SEL}"),
    ], "Zero on CPU replicas."),
    ("Model load time", "s", [("{{pod}}", f"embed_model_load_seconds{SEL}")], "Load plus warm-up at the full token budget."),
]


def panel(i, title, unit, targets, description):
    return {
        "id": i + 1,
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [{"refId": chr(65 + j), "expr": expr, "legendFormat": legend} for j, (legend, expr) in enumerate(targets)],
    }


def main():
    dashboard = {
        "uid": "embed-worker",
        "title": "embed-worker",
        "tags": ["embeddings", "kafka"],
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"},
            {"name": "job", "type": "query", "label": "Job", "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": "label_values(embed_build_info, job)", "includeAll": True, "multi": True, "refresh": 2},
        ]},
        "panels": [panel(i, *p) for i, p in enumerate(PANELS)],
    }
    OUT.write_text(json.dumps(dashboard, indent=2) + "\n")
    print(f"wrote {OUT} ({len(PANELS)} panels)")


if __name__ == "__main__":
    main()
