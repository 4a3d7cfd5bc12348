"""The Helm chart, the Dockerfile and the Grafana dashboard, checked with the real tools: Helm's
own lint (the Helm library in helm-sdkpy, Python >= 3.12, in .venv-ops) and hadolint.

No Kubernetes cluster and no Docker engine exist here, and helm-sdkpy has no `template` action, so
rendered manifests are not validated against Kubernetes schemas; lint renders every template."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from worker.observe.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "embed-worker"
OPS_BIN = REPO / ".venv-ops" / "bin"

pytestmark = pytest.mark.deploy


def ops_tool(name: str) -> str:
    tool = OPS_BIN / name
    assert tool.exists(), f"{tool} is missing: run `make install` (it builds .venv-ops with Python 3.12)"
    return str(tool)


def lint(*overlays: str | dict) -> tuple[list[dict], list[str]]:
    args = [ops_tool("python"), str(REPO / "scripts" / "helm_lint.py"), str(CHART)]
    for overlay in overlays:
        args += ["--set-json", json.dumps(overlay)] if isinstance(overlay, dict) else [str(CHART / overlay)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    fails = re.findall(r'funcMap fail message="([^"]*)"', proc.stderr)
    return json.loads(proc.stdout)["messages"], fails


def problems(messages: list[dict]) -> list[dict]:
    return [m for m in messages if m["severity"] in ("warning", "error")]


@pytest.mark.parametrize(
    "overlays",
    [
        pytest.param([], id="defaults"),
        pytest.param(["values-gpu.yaml"], id="gpu"),
        pytest.param([{"autoscaling": {"keda": {"enabled": False}, "hpa": {"enabled": True}}}], id="hpa-fallback"),
        pytest.param([{"autoscaling": {"keda": {"enabled": False}}, "replicaCount": 3}], id="fixed-replicas"),
        pytest.param(
            [
                "values-gpu.yaml",
                {
                    "kafka": {"securityProtocol": "SASL_SSL", "sasl": {"mechanism": "SCRAM-SHA-512", "username": "embed", "passwordSecret": {"name": "kafka-creds"}}},
                    "redis": {"deploy": True, "passwordSecret": {"name": "redis-creds"}, "onError": "closed"},
                    "serviceMonitor": {"enabled": True},
                    "model": {"name": "/models/e5", "volume": {"persistentVolumeClaim": {"claimName": "models"}}},
                },
            ],
            id="sasl-redis-servicemonitor-model-volume",
        ),
        pytest.param(
            [{"kafka": {"exactlyOnce": True, "assignmentStrategy": "cooperative-sticky"}}],
            id="exactly-once-cooperative",
        ),
        pytest.param(
            [{"longText": {"policy": "chunk"}, "sink": {"enabled": True, "storageClassName": "fast"}, "kafka": {"sasl": {"passwordSecret": {"name": "k"}}}}],
            id="chunking-and-index-sink",
        ),
    ],
)
def test_chart_lints_clean(overlays):
    messages, fails = lint(*overlays)
    assert problems(messages) == [] and fails == []


@pytest.mark.parametrize(
    "overlay, message",
    [
        ({"kafka": {"partitions": 4}}, "maxReplicaCount must not exceed kafka.partitions"),
        ({"autoscaling": {"keda": {"enabled": False}, "hpa": {"enabled": True, "maxReplicas": 40}}}, "hpa.maxReplicas must not exceed"),
        ({"redis": {"url": "redis://r:6379/0", "urlSecret": {"name": "s"}}}, "not both"),
    ],
)
def test_chart_refuses_values_that_cannot_work(overlay, message):
    _, fails = lint(overlay)
    assert any(message in f for f in fails), fails


def test_a_broken_template_is_a_lint_error(tmp_path):
    # the check above is only worth something if lint does render templates
    import shutil

    broken = tmp_path / "embed-worker"
    shutil.copytree(CHART, broken)
    (broken / "templates" / "broken.yaml").write_text("{{ .Values.no.such.value }}\n")
    proc = subprocess.run([ops_tool("python"), str(REPO / "scripts" / "helm_lint.py"), str(broken)], capture_output=True, text=True, timeout=120)
    assert any(m["severity"] == "error" for m in json.loads(proc.stdout)["messages"])


def test_dockerfile_passes_hadolint():
    proc = subprocess.run([ops_tool("hadolint"), "--config", str(REPO / ".hadolint.yaml"), str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dashboard_queries_only_metrics_the_worker_exports():
    dashboard = json.loads((CHART / "dashboards" / "embed-worker.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {re.sub(r"_(bucket|sum|count)$", "", name) for e in exprs for name in re.findall(r"\b(embed_[a-z_]+)", e)}
    exported = {m.name for m in Metrics().registry.collect()}
    exported |= {n + "_total" for n in exported} | {n + "_info" for n in exported}
    assert used - exported == set(), f"dashboard uses unknown metrics: {used - exported}"
    uncovered = {n for n in (m.name for m in Metrics().registry.collect())} - {u.removesuffix("_total") for u in used}
    assert uncovered <= {"embed_last_poll_timestamp_seconds", "embed_build"}, uncovered  # build: the job variable
