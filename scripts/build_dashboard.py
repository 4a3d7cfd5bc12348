"""Write helm/embed-worker/dashboards/embed-worker.json, the Grafana dashboard of the worker and the sink.

Generated so that every query names a metric the worker or the sink exports, or one of
``EXTERNAL_METRICS`` (tests/deploy/test_observability.py checks this, and that every exported
metric is on the dashboard). Run it with `make dashboard` after changing a panel.

Template variables: the data source; ``namespace``, ``job`` and ``pod`` (from ``embed_build_info``,
which every warm worker exports), which filter every worker query; ``group`` and ``sink_group``,
the consumer groups whose committed lag kafka-exporter reports; ``deployment``, the worker
Deployment whose replicas kube-state-metrics reports. Sink queries are filtered by namespace only
(the sink exports no ``embed_build_info``).
"""

import json
from pathlib import Path

OUT = (
    Path(__file__).resolve().parents[1]
    / "helm"
    / "embed-worker"
    / "dashboards"
    / "embed-worker.json"
)

# Metrics that come from outside this project: the dashboard and the chart's PrometheusRule
# (templates/prometheusrule.yaml) use them, and nothing here exports them. Name -> where from.
EXTERNAL_METRICS = {
    "kafka_consumergroup_lag": (
        "kafka-exporter (danielqsj/kafka_exporter): messages between a consumer group's committed offset and the "
        "partition's end, labels consumergroup, topic, partition. Stays while every worker is down."
    ),
    "kube_deployment_status_replicas_available": "kube-state-metrics: available replicas of a Deployment (labels namespace, deployment).",
    "kube_deployment_spec_replicas": "kube-state-metrics: desired replicas of a Deployment (labels namespace, deployment).",
}

SEL = '{namespace=~"$namespace", job=~"$job", pod=~"$pod"}'  # every worker query
SINK = '{namespace=~"$namespace"}'  # the sink's queries
GROUP = '{consumergroup=~"$group"}'  # kafka-exporter: the workers' group
SINK_GROUP = '{consumergroup=~"$sink_group"}'  # kafka-exporter: the sink's group
DEPLOYMENT = '{namespace=~"$namespace", deployment=~"$deployment"}'  # kube-state-metrics
R = "[$__rate_interval]"


def with_labels(sel: str, matchers: str) -> str:
    """``sel`` with more label matchers."""
    return f"{sel[:-1]}, {matchers}}}"


def rate(metric: str, sel: str = SEL, by: str = "") -> str:
    return f"sum{f' by ({by})' if by else ''} (rate({metric}{sel}{R}))"


def quantile(q: float, metric: str, sel: str = SEL, by: str = "") -> str:
    return f"histogram_quantile({q}, sum by (le{f', {by}' if by else ''}) (rate({metric}_bucket{sel}{R})))"


def mean(metric: str, sel: str = SEL) -> str:
    return f"sum(rate({metric}_sum{sel}{R})) / sum(rate({metric}_count{sel}{R}))"


# what became of the records taken in (a labelled counter has no series before its first increment: hence ``or vector(0)``)
ACCOUNTED = (
    f"{rate('embed_documents_total')} + {rate('embed_deletes_total')} + {rate('embed_dedup_hits_total')}"
    f" + ({rate('embed_dlq_messages_total')} or vector(0))"
)

# (row title, [(title, unit, [(legend, expr)], description)])
SECTIONS = [
    (
        "Health",
        [
            (
                "Replicas",
                "short",
                [
                    (
                        "available (kube-state-metrics)",
                        f"sum(kube_deployment_status_replicas_available{DEPLOYMENT})",
                    ),
                    (
                        "desired (kube-state-metrics)",
                        f"sum(kube_deployment_spec_replicas{DEPLOYMENT})",
                    ),
                    ("ready (worker-reported)", f"sum(embed_ready{SEL})"),
                ],
                "Available and desired come from kube-state-metrics and stay when every pod is down (the worker-reported count then vanishes). "
                "Alert: EmbedWorkerNoReadyWorkers.",
            ),
            (
                "Seconds since the main loop polled",
                "s",
                [
                    ("{{pod}}", f"time() - (embed_last_poll_timestamp_seconds{SEL} > 0)"),
                ],
                "Under a second while the loop runs. A growing line is a stuck loop: /healthz fails after EMBED_METRICS__STALL_AFTER_S and the "
                "liveness probe restarts the pod. Alert: EmbedWorkerLoopStalled.",
            ),
        ],
    ),
    (
        "Throughput and lag",
        [
            (
                "Documents embedded / s",
                "ops",
                [
                    ("{{pod}}", rate("embed_documents_total", by="pod")),
                    ("delete events", rate("embed_deletes_total")),
                ],
                "Vectors published per replica (a chunk counts one). Multiply by the target drain time to size KEDA's lagThreshold.",
            ),
            (
                "Tokens embedded / s",
                "ops",
                [("all", rate("embed_tokens_total"))],
                "Without padding, after truncation.",
            ),
            (
                "Input reconciliation / s",
                "ops",
                [
                    ("input messages", rate("embed_input_messages_total")),
                    ("accounted: vectors + deletes + dedup hits + dead letters", ACCOUNTED),
                    ("input - accounted", f"{rate('embed_input_messages_total')} - ({ACCOUNTED})"),
                ],
                "Every record taken in (re-reads included) becomes a vector, a delete event, a dedup hit or a dead letter; the difference hovers "
                "around zero (documents in flight). Chunked documents make it negative (one vector per chunk); a positive difference that "
                "persists is documents taken in and never finished: look at in-flight documents and the logs.",
            ),
            (
                "Consumer lag (messages)",
                "short",
                [
                    (
                        "committed, partition {{partition}}",
                        f"sum by (partition) (kafka_consumergroup_lag{GROUP})",
                    ),
                    ("committed, total", f"sum(kafka_consumergroup_lag{GROUP})"),
                    ("worker-reported (fetch position)", f"sum(embed_consumer_lag_messages{SEL})"),
                ],
                "Committed lag of the workers' consumer group, from kafka-exporter: what KEDA scales on, and still there when every worker is "
                "down. The worker-reported series (its fetch position against the high watermark) runs ahead of the committed one and "
                "vanishes with the pods. A partition whose lag never falls is stuck: look at the DLQ and the logs. Alert: EmbedWorkerLagGrowing.",
            ),
            (
                "End-to-end latency",
                "s",
                [
                    ("p50", quantile(0.5, "embed_end_to_end_latency_seconds")),
                    ("p99", quantile(0.99, "embed_end_to_end_latency_seconds")),
                ],
                "From the input's Kafka timestamp to the vector's acknowledgement: includes time spent in lag.",
            ),
            (
                "Stage duration p99",
                "s",
                [("{{stage}}", quantile(0.99, "embed_stage_duration_seconds", by="stage"))],
                "forward dominating is healthy; queue_wait or publish dominating points at batching or the broker.",
            ),
        ],
    ),
    (
        "Batching and the model",
        [
            (
                "Batches by flush reason / s",
                "ops",
                [("{{reason}}", rate("embed_batches_total", by="reason"))],
                "Forward passes that produced vectors (the parts of a batch split after running out of memory count each). Mostly deadline "
                "means light load (small batches); mostly token_budget means the worker is saturated.",
            ),
            (
                "Documents per batch",
                "short",
                [
                    ("mean", mean("embed_batch_size")),
                    ("p50", quantile(0.5, "embed_batch_size")),
                    ("p99", quantile(0.99, "embed_batch_size")),
                ],
                "Rows of the padded input tensor per forward pass (a chunk is one row).",
            ),
            (
                "Tokens per batch",
                "short",
                [
                    ("with padding, mean", mean("embed_batch_tokens")),
                    ("with padding, p99", quantile(0.99, "embed_batch_tokens")),
                    ("without padding, mean", mean("embed_batch_unpadded_tokens")),
                ],
                "With padding: rows × the longest row, what the model computes; close to EMBED_BATCH__MAX_TOKENS when saturated. Without "
                "padding: the rows' own tokens.",
            ),
            (
                "Padding efficiency",
                "percentunit",
                [("mean", mean("embed_padding_efficiency_ratio"))],
                "Tokens without padding / with padding. Low under light load (an idle model takes what waits); low while saturated: raise "
                "EMBED_BATCH__MAX_PENDING so more documents gather.",
            ),
            (
                "Out of memory",
                "ops",
                [
                    ("batches split in half / s", rate("embed_oom_splits_total")),
                    (
                        "documents dead-lettered (out_of_memory) / s",
                        rate(
                            "embed_dlq_messages_total", with_labels(SEL, 'reason="out_of_memory"')
                        ),
                    ),
                ],
                "A batch that runs out of accelerator memory is split in half and retried, down to single documents; one that does not fit "
                "alone is dead-lettered. Frequent splits: lower EMBED_BATCH__MAX_TOKENS.",
            ),
            (
                "GPU memory",
                "bytes",
                [
                    ("allocated {{pod}}", f"embed_gpu_memory_allocated_bytes{SEL}"),
                    ("reserved {{pod}}", f"embed_gpu_memory_reserved_bytes{SEL}"),
                ],
                "Zero on CPU replicas.",
            ),
            (
                "Model load time",
                "s",
                [("{{pod}}", f"embed_model_load_seconds{SEL}")],
                "Load plus warm-up at the full token budget.",
            ),
        ],
    ),
    (
        "Dedup, Kafka and errors",
        [
            (
                "Dedup hit ratio",
                "percentunit",
                [
                    (
                        "hits",
                        f"{rate('embed_dedup_hits_total')} / ({rate('embed_dedup_hits_total')} + {rate('embed_dedup_misses_total')})",
                    ),
                ],
                "Share of looked-up documents skipped because the same content was already embedded.",
            ),
            (
                "Dedup not applied",
                "short",
                [
                    ("embedded without a lookup / s", rate("embed_dedup_unchecked_total")),
                    ("held for their dedup marks", f"sum(embed_dedup_unmarked_documents{SEL})"),
                ],
                "Redis down with EMBED_REDIS__ON_ERROR=open: documents embedded without a lookup. Held: published, but Redis could not record "
                "their marks yet, so their offsets wait (and, past MAX_PENDING, consumption). Alerts: EmbedWorkerDedupUnchecked, "
                "EmbedWorkerDedupMarksPending.",
            ),
            (
                "Dead letters / s",
                "ops",
                [("{{reason}}", rate("embed_dlq_messages_total", by="reason"))],
                "Messages sent to the dead-letter topic, by reason. Alert: EmbedWorkerDeadLetters.",
            ),
            (
                "Errors / s",
                "ops",
                [
                    ("commit failures", rate("embed_commit_failures_total")),
                    ("Redis errors", rate("embed_redis_errors_total")),
                    ("publish failures", rate("embed_publish_failures_total")),
                    ("rebalances", rate("embed_rebalances_total")),
                ],
                "Redis errors: dedup lookups failing open or, with on_error=closed, consumption paused; publish failures: the broker did not "
                "acknowledge, partitions re-read from their commit (alert: EmbedWorkerPublishFailures); frequent rebalances: flapping replicas.",
            ),
            (
                "Commit latency p99",
                "s",
                [("p99", quantile(0.99, "embed_commit_duration_seconds"))],
                "",
            ),
            (
                "In flight",
                "short",
                [("in-flight documents {{pod}}", f"embed_inflight_documents{SEL}")],
                "Documents received and not yet committed, held for their dedup marks included.",
            ),
        ],
    ),
    (
        "Sink (embed-worker sink; needs its /metrics scraped)",
        [
            (
                "Sink lag (messages)",
                "short",
                [
                    (
                        "committed, partition {{partition}}",
                        f"sum by (partition) (kafka_consumergroup_lag{SINK_GROUP})",
                    ),
                    ("sink-reported (fetch position)", f"sum(embed_sink_lag_messages{SINK})"),
                ],
                "How far the index is behind the output topic: the sink group's committed lag from kafka-exporter (there while the sink is "
                "down), and the sink's own figure. Alert: EmbedSinkBehind.",
            ),
            (
                "Sink writes / s",
                "ops",
                [
                    ("messages applied", rate("embed_sink_messages_total", SINK)),
                    ("points upserted", rate("embed_sink_points_upserted_total", SINK)),
                    ("documents deleted", rate("embed_sink_documents_deleted_total", SINK)),
                    ("skipped (not embedding events)", rate("embed_sink_skipped_total", SINK)),
                    (
                        "other model {{model}}",
                        rate("embed_sink_other_model_vectors_total", SINK, by="model"),
                    ),
                    ("commit failures", rate("embed_sink_commit_failures_total", SINK)),
                ],
                "Other model: vectors left out because their model or dimension is not the index's (a rollout that reused the topic).",
            ),
            (
                "Sink write duration",
                "s",
                [
                    ("p50", quantile(0.5, "embed_sink_write_seconds", SINK)),
                    ("p99", quantile(0.99, "embed_sink_write_seconds", SINK)),
                ],
                "Time to apply one poll to the index.",
            ),
            ("Points in the index", "short", [("points", f"sum(embed_sink_points{SINK})")], ""),
        ],
    ),
]


def variable(name: str, label: str, query: str, **extra) -> dict:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": query,
        "definition": query,
        "refresh": 2,
        "sort": 1,
        **extra,
    }


def current(value: str) -> dict:
    return {"current": {"selected": True, "text": value, "value": value}}


TEMPLATING = [
    {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"},
    variable("namespace", "Namespace", "label_values(embed_build_info, namespace)"),
    variable(
        "job",
        "Job",
        'label_values(embed_build_info{namespace=~"$namespace"}, job)',
        includeAll=True,
        multi=True,
        allValue=".*",
    ),
    variable(
        "pod",
        "Pod",
        'label_values(embed_build_info{namespace=~"$namespace", job=~"$job"}, pod)',
        includeAll=True,
        multi=True,
        allValue=".*",
    ),
    variable(
        "group",
        "Consumer group",
        "label_values(kafka_consumergroup_lag, consumergroup)",
        **current("embed-worker"),
    ),
    variable(
        "sink_group",
        "Sink consumer group",
        "label_values(kafka_consumergroup_lag, consumergroup)",
        **current("embed-sink"),
    ),
    variable(
        "deployment",
        "Deployment",
        'label_values(kube_deployment_status_replicas_available{namespace=~"$namespace"}, deployment)',
        regex="/.*embed-worker$/",
        includeAll=True,
        multi=True,
        allValue=".*embed-worker",
    ),
]


def panels() -> list[dict]:
    out, y, next_id = [], 0, 1
    for row, section in SECTIONS:
        out.append(
            {
                "id": next_id,
                "type": "row",
                "title": row,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id, y = next_id + 1, y + 1
        for i, (title, unit, targets, description) in enumerate(section):
            out.append(
                {
                    "id": next_id,
                    "type": "timeseries",
                    "title": title,
                    "description": description,
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": y + 8 * (i // 2)},
                    "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                    "options": {
                        "legend": {"displayMode": "list", "placement": "bottom"},
                        "tooltip": {"mode": "multi"},
                    },
                    "targets": [
                        {"refId": chr(65 + j), "expr": expr, "legendFormat": legend}
                        for j, (legend, expr) in enumerate(targets)
                    ],
                }
            )
            next_id += 1
        y += 8 * ((len(section) + 1) // 2)
    return out


def dashboard() -> dict:
    return {
        "uid": "embed-worker",
        "title": "embed-worker",
        "tags": ["embeddings", "kafka"],
        "schemaVersion": 39,
        "version": 2,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": TEMPLATING},
        "panels": panels(),
    }


def main():
    board = dashboard()
    OUT.write_text(json.dumps(board, indent=2) + "\n")
    print(f"wrote {OUT} ({sum(p['type'] != 'row' for p in board['panels'])} panels)")


if __name__ == "__main__":
    main()
