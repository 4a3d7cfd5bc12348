"""The Grafana dashboard and the chart's PrometheusRule against the metrics the worker and the sink
export: every query and every alert names an exported metric or one of the listed external ones
(``EXTERNAL_METRICS`` in scripts/build_dashboard.py), every exported metric is on the dashboard,
worker queries are filtered by the dashboard's variables, and the alerts the runbooks name exist.

The alert rules are read twice: from the template's text (Helm actions stripped crudely, so this
runs anywhere) and from `helm template`'s output (Helm from .venv-ops)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from worker.observe.metrics import Metrics
from worker.sink.consumer import SinkMetrics

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "embed-worker"
DASHBOARD = CHART / "dashboards" / "embed-worker.json"
RULE_TEMPLATE = CHART / "templates" / "prometheusrule.yaml"
HELM = REPO / ".venv-ops" / "bin" / "helm"

pytestmark = pytest.mark.deploy

ALERTS = {
    "EmbedWorkerLoopStalled",
    "EmbedWorkerNoReadyWorkers",
    "EmbedWorkerLagGrowing",
    "EmbedWorkerDeadLetters",
    "EmbedWorkerPublishFailures",
    "EmbedWorkerDedupUnchecked",
    "EmbedWorkerDedupMarksPending",
    "EmbedSinkBehind",
}

# Exported metrics the dashboard may leave out, each with its reason. None today: embed_build_info
# feeds the namespace/job/pod variables, embed_last_poll_timestamp_seconds the "seconds since the
# main loop polled" panel.
NOT_ON_DASHBOARD: dict[str, str] = {}


def _load_build_script():
    spec = importlib.util.spec_from_file_location(
        "build_dashboard", REPO / "scripts" / "build_dashboard.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILD = _load_build_script()
EXTERNAL = set(BUILD.EXTERNAL_METRICS)


# -- what the worker and the sink export ------------------------------------------------------------

SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "info": ("_info",),
    "summary": ("", "_sum", "_count"),
}


def _family_name(fam) -> str:
    """How docs/operations.md and the alerts name a metric: counters with _total, infos with _info."""
    return fam.name + {"counter": "_total", "info": "_info"}.get(fam.type, "")


def exported() -> dict[str, str]:
    """Every series name a query may use (``x_bucket``, ``x_total``...) -> its metric's name.
    Built from the metric definitions, not from samples: a labelled metric has no sample before
    its first use."""
    out: dict[str, str] = {}
    for registry in (Metrics().registry, SinkMetrics().registry):
        for fam in registry.collect():
            for suffix in SUFFIXES.get(fam.type, ("",)):
                out[fam.name + suffix] = _family_name(fam)
    return out


EXPORTED = exported()


# -- metric names in PromQL ---------------------------------------------------------------------------

KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (or a Grafana variable query's
    ``label_values(selector, label)``): string literals, label matchers, ranges and grouping
    label lists are removed, then every identifier that is not a function call or a keyword."""
    e = re.sub(r"\blabel_values\s*\((.*),\s*\w+\s*\)\s*$", r"(\1)", expr.strip(), flags=re.S)
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', e)
    e = re.sub(r"\{[^{}]*\}", " ", e)
    e = re.sub(r"\[[^\[\]]*\]", " ", e)
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w$.:])([A-Za-z_:][\w:]*)(\s*\()?", e):
        if not m.group(2) and m.group(1).lower() not in KEYWORDS:
            names.add(m.group(1))
    return names


def unknown(exprs: dict[str, str]) -> dict[str, set[str]]:
    """Where (the key) a query names a metric nobody exports."""
    out = {where: metric_names(e) - EXPORTED.keys() - EXTERNAL for where, e in exprs.items()}
    return {k: v for k, v in out.items() if v}


def test_metric_names_are_read_out_of_promql():
    expr = (
        'histogram_quantile(0.99, sum by (le, stage) (rate(embed_stage_duration_seconds_bucket{namespace=~"$namespace", pod=~"$pod"}[$__rate_interval])))'
        ' / on (pod) group_left (model) embed_build_info or vector(0) and deriv(sum(kafka_consumergroup_lag{consumergroup="x"})[10m:]) > 1e3'
        " unless time() - (embed_last_poll_timestamp_seconds > 0)"
    )
    assert metric_names(expr) == {
        "embed_stage_duration_seconds_bucket",
        "embed_build_info",
        "kafka_consumergroup_lag",
        "embed_last_poll_timestamp_seconds",
    }
    assert metric_names('label_values(embed_build_info{namespace=~"$namespace"}, pod)') == {
        "embed_build_info"
    }
    assert unknown(
        {
            "typo": "sum(rate(embed_documentz_total[5m]))",
            "fine": "sum(rate(embed_documents_total[5m]))",
        }
    ) == {"typo": {"embed_documentz_total"}}


# -- the dashboard -------------------------------------------------------------------------------------


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panel_queries(board: dict) -> dict[str, str]:
    return {
        f"{p['title']} / {t['refId']}": t["expr"]
        for p in board["panels"]
        if p["type"] != "row"
        for t in p["targets"]
    }


def variable_queries(board: dict) -> dict[str, str]:
    return {
        f"variable {v['name']}": v["query"]
        for v in board["templating"]["list"]
        if v["type"] == "query"
    }


def test_the_dashboard_json_is_the_build_scripts_output():
    assert dashboard() == json.loads(json.dumps(BUILD.dashboard())), (
        "stale dashboard: run `make dashboard`"
    )


def test_dashboard_queries_name_only_exported_or_listed_external_metrics():
    board = dashboard()
    assert unknown({**panel_queries(board), **variable_queries(board)}) == {}


def test_a_typo_in_a_panel_fails_the_check():
    board = dashboard()
    target = next(
        t
        for p in board["panels"]
        if p["type"] != "row"
        for t in p["targets"]
        if "embed_" in t["expr"]
    )
    target["expr"] = target["expr"].replace("embed_", "embed_x", 1)
    assert len(unknown(panel_queries(board))) == 1


def test_every_exported_metric_is_on_the_dashboard():
    board = dashboard()
    used = {
        EXPORTED[n]
        for e in {**panel_queries(board), **variable_queries(board)}.values()
        for n in metric_names(e)
        if n in EXPORTED
    }
    missing = set(EXPORTED.values()) - used - NOT_ON_DASHBOARD.keys()
    assert missing == set(), (
        f"exported but on no panel (add a panel, or a reason to NOT_ON_DASHBOARD): {sorted(missing)}"
    )
    assert NOT_ON_DASHBOARD.keys() <= set(EXPORTED.values()), (
        "NOT_ON_DASHBOARD names a metric nobody exports"
    )


def test_every_external_metric_is_used_and_has_its_source():
    board = dashboard()
    used = {
        n
        for e in {**panel_queries(board), **variable_queries(board)}.values()
        for n in metric_names(e)
    }
    used |= {n for e in template_rules().values() for n in metric_names(e)}
    assert used >= EXTERNAL, f"listed but never used: {EXTERNAL - used}"
    assert all(BUILD.EXTERNAL_METRICS[n].strip() for n in EXTERNAL)
    assert not EXTERNAL & EXPORTED.keys()


SELECTOR = re.compile(r"(?<![\w$.:])([A-Za-z_:][\w:]*)\s*(\{[^{}]*\})?")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def selectors(expr: str) -> list[tuple[str, str]]:
    """(metric, its label matchers or "") for every metric selected in a query."""
    names = metric_names(expr)
    strings = [m.span() for m in STRING.finditer(expr)]
    return [
        (m.group(1), m.group(2) or "")
        for m in SELECTOR.finditer(expr)
        if m.group(1) in names and not any(a <= m.start() < b for a, b in strings)
    ]


def test_worker_queries_are_filtered_by_namespace_job_and_pod():
    board = dashboard()
    sink_families = {_family_name(f) for f in SinkMetrics().registry.collect()}
    wrong = []
    for where, expr in panel_queries(board).items():
        for name, matchers in selectors(expr):
            if name in EXTERNAL:
                need = (
                    ['consumergroup=~"$']
                    if name == "kafka_consumergroup_lag"
                    else ['namespace=~"$namespace"', 'deployment=~"$deployment"']
                )
            elif EXPORTED.get(name) in sink_families:
                need = ['namespace=~"$namespace"']
            else:
                need = ['namespace=~"$namespace"', 'job=~"$job"', 'pod=~"$pod"']
            if not all(n in matchers for n in need):
                wrong.append(f"{where}: {name}{matchers}")
    assert wrong == []


def test_dashboard_variables():
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert {
        "datasource",
        "namespace",
        "job",
        "pod",
        "group",
        "sink_group",
        "deployment",
    } <= variables.keys()
    assert variables["namespace"]["query"] == "label_values(embed_build_info, namespace)"
    assert (
        "label_values(embed_build_info" in variables["job"]["query"]
        and "label_values(embed_build_info" in variables["pod"]["query"]
    )
    names = list(variables)
    assert (
        names.index("namespace") < names.index("job") < names.index("pod")
    )  # each filters the next


def test_lag_panels_read_the_committed_lag_first():
    panels = {p["title"]: p for p in dashboard()["panels"]}
    for title, own in (
        ("Consumer lag (messages)", "embed_consumer_lag_messages"),
        ("Sink lag (messages)", "embed_sink_lag_messages"),
    ):
        exprs = [t["expr"] for t in panels[title]["targets"]]
        assert "kafka_consumergroup_lag" in metric_names(exprs[0]), (
            f"{title}: the first series must be kafka-exporter's committed lag"
        )
        assert all(
            own not in metric_names(e)
            for e in exprs
            if "kafka_consumergroup_lag" in metric_names(e)
        )
        assert "kafka-exporter" in panels[title]["description"]


def test_the_reconciliation_panel_accounts_for_every_input_message():
    panel = next(p for p in dashboard()["panels"] if p["title"].startswith("Input reconciliation"))
    names = set().union(*(metric_names(t["expr"]) for t in panel["targets"]))
    assert {
        "embed_input_messages_total",
        "embed_documents_total",
        "embed_deletes_total",
        "embed_dedup_hits_total",
        "embed_dlq_messages_total",
    } <= names


def test_the_readme_names_what_the_dashboard_and_alerts_need():
    readme = (REPO / "docs" / "operations.md").read_text()
    assert "kafka-exporter" in readme and "kube-state-metrics" in readme
    for name in ALERTS:
        assert name in readme, f"docs/operations.md does not mention {name}"
    for family in set(EXPORTED.values()) - {"embed_build_info"}:
        assert family in readme, f"docs/operations.md's metrics list lacks {family}"


# -- the alert rules -------------------------------------------------------------------------------------


def template_rules() -> dict[str, str]:
    """alert -> expr, from the template's text: each ``{{ $var }}`` defined by ``printf "literal" ...``
    becomes its literal (the metric names stay, the %q holes do not matter), any other action a 0."""
    text = re.sub(r"\{\{-?\s*/\*.*?\*/\s*-?\}\}", "", RULE_TEMPLATE.read_text(), flags=re.S)
    literals = dict(re.findall(r'\{\{-?\s*(\$\w+)\s*:=\s*printf\s+"((?:[^"\\]|\\.)*)"', text))
    text = re.sub(
        r"\{\{-?\s*(\$\w+)\s*-?\}\}",
        lambda m: literals.get(m.group(1), "0").replace('\\"', '"'),
        text,
    )
    text = re.sub(r"\{\{`(.*?)`\}\}", r"\1", text)
    text = re.sub(r"\{\{.*?\}\}", "0", text)
    rules: dict[str, str] = {}
    for m in re.finditer(
        r"^(\s*)- alert: (\w+)\n(.*?)(?=^\s*- alert: |\Z)", text, flags=re.S | re.M
    ):
        expr = re.search(r"expr: \|-\n((?:[ ]{12,}.*\n)+)", m.group(3))
        assert expr, f"{m.group(2)}: no `expr: |-` block"
        rules[m.group(2)] = expr.group(1)
    return rules


def render(*args: str, enabled: bool = True) -> list[dict]:
    """`helm template` of the chart, PrometheusRule only (Helm from .venv-ops)."""
    assert HELM.exists(), (
        f"{HELM} is missing: run `make install` (it builds .venv-ops and fetches Helm)"
    )
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert not enabled or "rules" in (values.get("prometheusRule") or {}), (
        "values.yaml has no prometheusRule.rules (the rules' thresholds and durations)"
    )
    cmd = [
        str(HELM),
        "template",
        "rel",
        str(CHART),
        "--namespace",
        "embed-ns",
        "--api-versions",
        "monitoring.coreos.com/v1",
        "--show-only",
        "templates/prometheusrule.yaml",
        "--set",
        f"prometheusRule.enabled={str(enabled).lower()}",
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode and "could not find template" in proc.stderr:
        return []  # rendered nothing
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def rendered_rules(*args: str) -> list[dict]:
    docs = render(*args)
    assert [d["kind"] for d in docs] == ["PrometheusRule"]
    return [r for g in docs[0]["spec"]["groups"] for r in g["rules"]]


def test_the_template_defines_every_alert_on_known_metrics():
    rules = template_rules()
    assert set(rules) == ALERTS
    assert unknown(rules) == {}


def test_a_typo_in_an_alert_fails_the_check():
    rules = template_rules()
    rules["EmbedWorkerDeadLetters"] = rules["EmbedWorkerDeadLetters"].replace(
        "embed_dlq_messages_total", "embed_dlq_message_total"
    )
    assert set(unknown(rules)) == {"EmbedWorkerDeadLetters"}


def test_the_template_is_wrapped_in_its_switch_and_uses_the_charts_helpers():
    text = RULE_TEMPLATE.read_text()
    assert text.startswith("{{- if .Values.prometheusRule.enabled }}") and text.rstrip().endswith(
        "{{- end }}"
    )
    assert 'include "embed-worker.fullname" .' in text and 'include "embed-worker.labels" .' in text
    assert ".Values.prometheusRule.labels" in text and "kind: PrometheusRule" in text


def _balanced(expr: str) -> bool:
    depth = {"(": 0, "[": 0, "{": 0}
    pairs = {")": "(", "]": "[", "}": "{"}
    for ch in re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr):
        if ch in depth:
            depth[ch] += 1
        elif ch in pairs:
            depth[pairs[ch]] -= 1
            if depth[pairs[ch]] < 0:
                return False
    return not any(depth.values())


def test_rendered_rules_are_complete_and_scoped_to_the_release():
    rules = rendered_rules(
        "--set",
        "sink.enabled=true",
        "--set",
        "kafka.groupId=workers-g",
        "--set",
        "sink.groupId=sink-g",
        "--set",
        "kafka.inputTopic=in-t",
        "--set",
        "kafka.outputTopic=out-t",
    )
    by_name = {r["alert"]: r for r in rules}
    assert set(by_name) == ALERTS
    assert unknown({n: r["expr"] for n, r in by_name.items()}) == {}
    for name, rule in by_name.items():
        expr = rule["expr"]
        assert "{{" not in expr and _balanced(expr), f"{name}: {expr}"
        assert re.fullmatch(r"\d+[smhd]", str(rule["for"])), f"{name}: for {rule['for']!r}"
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert {"summary", "description", "runbook"} <= rule["annotations"].keys()
        for n, matchers in selectors(expr):
            if n == "kafka_consumergroup_lag":
                assert matchers in (
                    '{consumergroup="workers-g", topic="in-t"}',
                    '{consumergroup="sink-g", topic="out-t"}',
                ), f"{name}: {matchers}"
            else:
                assert 'namespace="embed-ns"' in matchers, (
                    f"{name}: {n}{matchers} is not scoped to the release's namespace"
                )
    assert 'consumergroup="workers-g"' in by_name["EmbedWorkerLagGrowing"]["expr"]
    assert 'consumergroup="sink-g"' in by_name["EmbedSinkBehind"]["expr"]
    assert "deriv(" in by_name["EmbedWorkerLagGrowing"]["expr"]
    assert "embed_dedup_unchecked_total" in metric_names(
        by_name["EmbedWorkerDedupUnchecked"]["expr"]
    )
    assert "embed_last_poll_timestamp_seconds" in metric_names(
        by_name["EmbedWorkerLoopStalled"]["expr"]
    )
    assert 'deployment="rel-embed-worker"' in by_name["EmbedWorkerNoReadyWorkers"]["expr"]
    # Prometheus' templating survives Helm's
    assert any("{{ $value" in r["annotations"]["description"] for r in rules)


def test_rendered_rules_follow_their_values():
    rules = rendered_rules(
        "--set",
        "prometheusRule.rules.lagGrowing.threshold=1234",
        "--set",
        "prometheusRule.rules.lagGrowing.for=42m",
        "--set",
        "prometheusRule.rules.deadLetters.enabled=false",
        "--set",
        "prometheusRule.labels.release=prom",
        "--set-string",
        'prometheusRule.workerSelector=job="custom"',
    )
    by_name = {r["alert"]: r for r in rules}
    assert "EmbedSinkBehind" not in by_name  # no sink, no sink alert
    assert "EmbedWorkerDeadLetters" not in by_name
    assert (
        "> 1234" in by_name["EmbedWorkerLagGrowing"]["expr"]
        and by_name["EmbedWorkerLagGrowing"]["for"] == "42m"
    )
    assert 'job="custom"' in by_name["EmbedWorkerPublishFailures"]["expr"]
    doc = render("--set", "prometheusRule.labels.release=prom")[0]
    assert (
        doc["metadata"]["labels"]["release"] == "prom"
        and doc["metadata"]["name"] == "rel-embed-worker"
    )


def test_no_rule_without_the_switch():
    assert render(enabled=False) == []
