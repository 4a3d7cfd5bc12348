"""The Helm chart, rendered by Helm itself and checked object by object.

`scripts/render_chart.py` (in .venv-ops) runs `helm lint --strict` and `helm template` with Helm 4
and validates every built-in object against the Kubernetes 1.31 OpenAPI schemas (kubernetes-validate,
strict). These tests read the rendered objects: each defect the chart once had has a case here that
renders the values triggering it. KEDA's and the Prometheus operator's objects have no schema here;
their fields are checked by name against what those controllers read. No cluster exists here, so
admission (Pod Security), scheduling and the controllers' behaviour are not exercised."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "embed-worker"
OPS_BIN = REPO / ".venv-ops" / "bin"
KEDA = "keda.sh/v1alpha1"
MONITORING = "monitoring.coreos.com/v1"

pytestmark = pytest.mark.deploy


def ops_tool(name: str) -> str:
    tool = OPS_BIN / name
    assert tool.exists(), (
        f"{tool} is missing: run `make install` (it builds .venv-ops and fetches Helm)"
    )
    return str(tool)


def render_result(
    *overlays: str | dict,
    api_versions: tuple[str, ...] = (),
    chart: Path = CHART,
    tmp: Path | None = None,
    release: str = "embed",
) -> dict:
    args = [
        ops_tool("python"),
        str(REPO / "scripts" / "render_chart.py"),
        str(chart),
        "--release",
        release,
    ]
    for i, overlay in enumerate(overlays):
        if isinstance(overlay, dict):
            path = (tmp or Path("/tmp")) / f"embed-chart-values-{id(overlay)}-{i}.yaml"
            path.write_text(yaml.safe_dump(overlay))
            overlay = str(path)
        else:
            overlay = str(chart / overlay)
        args += ["-f", overlay]
    if api_versions:
        args += ["--api-versions", ",".join(api_versions)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def render(
    *overlays: str | dict, api_versions: tuple[str, ...] = (), release: str = "embed"
) -> list[dict]:
    """The rendered objects; fails the test on any Helm error, lint warning or invalid object."""
    result = render_result(*overlays, api_versions=api_versions, release=release)
    assert result["error"] is None, result["error"]
    assert result["lint"] == [] and result["invalid"] == [], result["lint"] + result["invalid"]
    return result["objects"]


def refused(*overlays: str | dict, api_versions: tuple[str, ...] = ()) -> str:
    result = render_result(*overlays, api_versions=api_versions)
    assert result["error"], "the chart rendered values it should refuse"
    return result["error"]


def one(objects: list[dict], kind: str, name_suffix: str = "") -> dict:
    found = [
        o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)
    ]
    assert len(found) == 1, f"{kind} *{name_suffix}: {[o['metadata']['name'] for o in found]}"
    return found[0]


def kinds(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def worker(objects: list[dict]) -> dict:
    return one(objects, "Deployment", "embed-worker")


def container(workload: dict, name: str | None = None) -> dict:
    containers = workload["spec"]["template"]["spec"]["containers"]
    return containers[0] if name is None else next(c for c in containers if c["name"] == name)


def env_of(c: dict) -> dict:
    return {e["name"]: e for e in c.get("env", [])}


def config(objects: list[dict]) -> dict:
    return one(objects, "ConfigMap", "embed-worker")["data"]


def workloads(objects: list[dict]) -> list[dict]:
    return [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]


def matches(selector: dict, labels: dict) -> bool:
    ok = all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
    for expr in selector.get("matchExpressions", []):
        ok &= expr["operator"] == "In" and labels.get(expr["key"]) in expr["values"]
    return ok


SASL = {
    "securityProtocol": "SASL_SSL",
    "sasl": {
        "mechanism": "SCRAM-SHA-512",
        "username": "embed",
        "passwordSecret": {"name": "kafka-creds"},
    },
}
PRIVATE_CA = {
    "tls": {"caSecret": {"name": "kafka-ca"}, "clientCertSecret": {"name": "kafka-client"}}
}
EVERYTHING = {
    "kafka": {
        **SASL,
        **PRIVATE_CA,
        "staticMembership": True,
        "exactlyOnce": True,
        "assignmentStrategy": "cooperative-sticky",
    },
    "redis": {"deploy": True, "passwordSecret": {"name": "redis-creds"}, "onError": "closed"},
    "autoscaling": {"keda": {"enabled": True, "maxReplicaCount": 4}},
    "processes": 3,
    "podMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "sink": {"enabled": True, "storageClassName": "fast"},
    "model": {"name": "/models/e5", "volume": {"persistentVolumeClaim": {"claimName": "models"}}},
    "longText": {"policy": "chunk"},
    "extraEnv": [{"name": "EXTRA", "value": "1"}],
    "envFrom": [{"secretRef": {"name": "more-settings"}}],
    "extraVolumes": [{"name": "cache", "emptyDir": {"sizeLimit": "1Gi"}}],
    "extraVolumeMounts": [{"name": "cache", "mountPath": "/cache"}],
    "topologySpreadConstraints": [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
        }
    ],
    "priorityClassName": "batch-high",
    "runtimeClassName": "nvidia",
}
ALL_APIS = (KEDA, MONITORING)


@pytest.mark.parametrize(
    "overlays, apis",
    [
        pytest.param([], (), id="defaults"),
        pytest.param(["values-gpu.yaml"], (), id="gpu"),
        pytest.param([{"autoscaling": {"hpa": {"enabled": True}}}], (), id="hpa-fallback"),
        pytest.param([{"replicaCount": 3}], (), id="fixed-replicas"),
        pytest.param(
            [{"autoscaling": {"keda": {"enabled": True}}, "serviceMonitor": {"enabled": True}}],
            ALL_APIS,
            id="keda-servicemonitor",
        ),
        pytest.param(["values-gpu.yaml", EVERYTHING], ALL_APIS, id="everything"),
    ],
)
def test_chart_renders_objects_kubernetes_accepts(overlays, apis):
    assert render(*overlays, api_versions=apis)


def test_nothing_that_selects_the_workers_selects_the_redis_or_sink_pods():
    objects = render(
        {
            "redis": {"deploy": True},
            "sink": {"enabled": True},
            "podDisruptionBudget": {"enabled": True},
            "serviceMonitor": {"enabled": True},
        },
        api_versions=ALL_APIS,
    )
    pods = {
        w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"]
        for w in workloads(objects)
    }
    assert len(pods) == 3
    selectors = {
        "Service": one(objects, "Service", "embed-worker")["spec"]["selector"],
        "PodDisruptionBudget": one(objects, "PodDisruptionBudget")["spec"]["selector"][
            "matchLabels"
        ],
        "ServiceMonitor": one(objects, "ServiceMonitor", "embed-worker")["spec"]["selector"][
            "matchLabels"
        ],
    }
    for kind, selector in selectors.items():
        selected = [
            name for name, labels in pods.items() if matches({"matchLabels": selector}, labels)
        ]
        assert selected == [worker(objects)["metadata"]["name"]], f"{kind} selects {selected}"
    for w in workloads(objects):  # and each workload's own selector matches its pods only
        mine = [name for name, labels in pods.items() if matches(w["spec"]["selector"], labels)]
        assert mine == [w["metadata"]["name"]]


def test_the_charts_redis_requires_the_password_the_workers_send_and_is_bounded_and_guarded():
    objects = render(
        {
            "redis": {
                "deploy": True,
                "passwordSecret": {"name": "redis-creds", "key": "pw"},
                "onError": "closed",
            }
        }
    )
    redis = one(objects, "Deployment", "-redis")
    rc = container(redis)
    args = rc["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert env_of(rc)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "redis-creds",
        "key": "pw",
    }
    assert env_of(container(worker(objects)))["EMBED_REDIS__PASSWORD"]["valueFrom"][
        "secretKeyRef"
    ] == {"name": "redis-creds", "key": "pw"}
    assert (
        config(objects)["EMBED_REDIS__URL"]
        == f"redis://{one(objects, 'Service', '-redis')['metadata']['name']}:6379/0"
    )
    # Guaranteed QoS: requests equal limits for CPU and memory
    assert rc["resources"]["requests"] == rc["resources"]["limits"] and set(
        rc["resources"]["limits"]
    ) == {"cpu", "memory"}
    maxmemory = args[args.index("--maxmemory") + 1]
    assert maxmemory.endswith("mb") and int(maxmemory[:-2]) * 2**20 < 512 * 2**20, (
        "maxmemory must stay below the memory limit"
    )
    policy = one(objects, "NetworkPolicy", "-redis")
    assert policy["spec"]["podSelector"]["matchLabels"] == redis["spec"]["selector"]["matchLabels"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [
        {"podSelector": {"matchLabels": worker(objects)["spec"]["selector"]["matchLabels"]}}
    ]


def test_a_redis_url_beside_the_charts_own_redis_is_refused():
    assert "redis.deploy runs the chart's own Redis" in refused(
        {"redis": {"deploy": True, "url": "redis://elsewhere:6379/0"}}
    )
    assert "not both" in refused({"redis": {"url": "redis://r:6379/0", "urlSecret": {"name": "s"}}})
    assert "redis" in refused(
        {"redis": {"url": "redis://:secret@r:6379/0"}}
    )  # credentials do not go into a ConfigMap


def test_keda_authenticates_with_sasl_and_a_private_ca_through_its_trigger_authentication():
    objects = render(
        {"kafka": {**SASL, **PRIVATE_CA}, "autoscaling": {"keda": {"enabled": True}}},
        api_versions=(KEDA,),
    )
    (trigger,) = one(objects, "ScaledObject")["spec"]["triggers"]
    auth = one(objects, "TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    # KEDA reads username and password only from the TriggerAuthentication
    assert not {"username", "password", "ca", "cert", "key"} & set(trigger["metadata"])
    assert trigger["metadata"]["sasl"] == "scram_sha512" and trigger["metadata"]["tls"] == "enable"
    params = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
    assert params["password"]["name"] == "kafka-creds"
    assert (params["ca"]["name"], params["ca"]["key"]) == ("kafka-ca", "ca.crt")
    assert (params["cert"]["key"], params["key"]["key"]) == ("tls.crt", "tls.key")
    (username,) = auth["spec"]["env"]
    assert username["parameter"] == "username" and username["containerName"] == "worker"
    w = container(worker(objects))
    assert (
        env_of(w)[username["name"]]["value"] == "embed"
    )  # KEDA resolves it from the worker's own env
    # the worker reads the same CA from a mounted file
    ca_file = config(objects)["EMBED_KAFKA__SSL_CAFILE"]
    mount = next(m for m in w["volumeMounts"] if ca_file.startswith(m["mountPath"] + "/"))
    volume = next(
        v
        for v in worker(objects)["spec"]["template"]["spec"]["volumes"]
        if v["name"] == mount["name"]
    )
    assert volume["secret"]["secretName"] == "kafka-ca"
    assert [i["path"] for i in volume["secret"]["items"]] == [ca_file.rsplit("/", 1)[1]]
    assert config(objects)["EMBED_KAFKA__SSL_CERTFILE"].startswith("/etc/embed/kafka-tls/client/")


def test_a_user_name_from_a_secret_reaches_keda_from_the_secret_itself():
    # KEDA skips secretKeyRef env vars where its secret access is restricted: name the Secret directly
    sasl = {
        **SASL,
        "sasl": {
            **SASL["sasl"],
            "username": "",
            "usernameSecret": {"name": "kafka-user", "key": "user"},
        },
    }
    objects = render(
        {"kafka": sasl, "autoscaling": {"keda": {"enabled": True}}}, api_versions=(KEDA,)
    )
    auth = one(objects, "TriggerAuthentication")["spec"]
    assert "env" not in auth
    assert {"parameter": "username", "name": "kafka-user", "key": "user"} in auth["secretTargetRef"]
    assert env_of(container(worker(objects)))["EMBED_KAFKA__SASL_USERNAME"]["valueFrom"][
        "secretKeyRef"
    ] == {"name": "kafka-user", "key": "user"}


def test_sasl_values_that_cannot_authenticate_are_refused():
    assert "needs kafka.sasl.mechanism" in refused(
        {
            "kafka": {
                "securityProtocol": "SASL_SSL",
                "sasl": {"mechanism": "PLAIN", "passwordSecret": {"name": "k"}},
            }
        }
    )
    assert "use SASL_SSL or SASL_PLAINTEXT" in refused({"kafka": {"sasl": {"mechanism": "PLAIN"}}})
    assert "use SSL or SASL_SSL" in refused({"kafka": PRIVATE_CA})


def test_keda_counts_a_stuck_partitions_lag_follows_the_workers_reset_policy_and_scales_in_steps():
    objects = render(
        {"kafka": {"autoOffsetReset": "latest"}, "autoscaling": {"keda": {"enabled": True}}},
        api_versions=(KEDA,),
    )
    scaled = one(objects, "ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["metadata"]["excludePersistentLag"] == "false"
    assert (
        trigger["metadata"]["offsetResetPolicy"]
        == "latest"
        == config(objects)["EMBED_KAFKA__AUTO_OFFSET_RESET"]
    )
    behavior = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 300}]
    assert behavior["scaleUp"]["policies"][0]["type"] == "Pods"


def test_keda_is_off_by_default_and_refused_with_a_clear_message_where_it_is_not_installed():
    assert not kinds(render(), "ScaledObject")
    assert "this cluster has no KEDA" in refused({"autoscaling": {"keda": {"enabled": True}}})
    assert "Prometheus operator" in refused({"serviceMonitor": {"enabled": True}})


@pytest.mark.parametrize(
    "overlay, message",
    [
        (
            {"autoscaling": {"keda": {"enabled": True, "maxReplicaCount": 7}}, "processes": 2},
            "maxReplicaCount × processes must not exceed kafka.partitions",
        ),
        (
            {"autoscaling": {"hpa": {"enabled": True, "maxReplicas": 5}}, "processes": 3},
            "hpa.maxReplicas × processes must not exceed",
        ),
        ({"replicaCount": 4, "processes": 4}, "replicaCount × processes must not exceed"),
    ],
)
def test_more_consumers_than_partitions_are_refused_counting_every_process(overlay, message):
    assert message in refused(overlay, api_versions=(KEDA,))


def test_every_process_is_probed_and_scraped():
    objects = render(
        {"processes": 3, "serviceMonitor": {"enabled": True}}, api_versions=(MONITORING,)
    )
    w = container(worker(objects))
    ports = [p["containerPort"] for p in w["ports"]]
    assert ports == [9400, 9401, 9402]
    for probe, path in (
        ("startupProbe", "/startupz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        command = w[probe]["exec"]["command"]
        assert command[:4] == ["python3", "-m", "worker.observe.probe", path]
        assert (
            command[command.index("--processes") + 1] == "3"
            and command[command.index("--port") + 1] == "9400"
        )
    assert [e["port"] for e in one(objects, "ServiceMonitor")["spec"]["endpoints"]] == [
        "metrics",
        "metrics-1",
        "metrics-2",
    ]
    assert [p["name"] for p in one(objects, "Service", "embed-worker")["spec"]["ports"]] == [
        "metrics",
        "metrics-1",
        "metrics-2",
    ]
    assert config(objects)["EMBED_PROCESSES"] == "3"


def test_one_process_is_probed_over_http_and_startup_waits_for_the_warm_model():
    w = container(worker(render()))
    assert w["startupProbe"]["httpGet"]["path"] == "/startupz"
    assert (w["livenessProbe"]["httpGet"]["path"], w["readinessProbe"]["httpGet"]["path"]) == (
        "/healthz",
        "/readyz",
    )


@pytest.mark.parametrize("grace", [5, 30, 300])
def test_the_pods_grace_period_covers_the_workers_drain_flush_and_close(grace):
    objects = render({"shutdown": {"graceSeconds": grace}})
    pod_grace = worker(objects)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert float(config(objects)["EMBED_SHUTDOWN_GRACE_S"]) == grace
    assert pod_grace >= grace + 15  # producer close alone may take 10 s after the grace


def test_the_grace_period_cannot_be_set_apart_from_the_workers_grace():
    assert "EMBED_SHUTDOWN_GRACE_S" in refused({"config": {"EMBED_SHUTDOWN_GRACE_S": "120"}})
    assert "terminationGracePeriodSeconds" in refused({"terminationGracePeriodSeconds": 30})


def test_every_pod_meets_the_restricted_pod_security_standard():
    objects = render(EVERYTHING, api_versions=ALL_APIS)
    assert len(workloads(objects)) == 3
    for w in workloads(objects):
        pod = w["spec"]["template"]["spec"]
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, w[
            "metadata"
        ]["name"]
        assert (
            pod["securityContext"]["runAsNonRoot"] is True
            and pod["securityContext"]["runAsGroup"] > 0
        )
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert (
                sc["allowPrivilegeEscalation"] is False
                and sc["capabilities"]["drop"] == ["ALL"]
                and sc["readOnlyRootFilesystem"] is True
            )
        for volume in pod["volumes"]:
            if "emptyDir" in volume:
                assert volume["emptyDir"].get("sizeLimit"), (
                    f"{w['metadata']['name']}: unbounded emptyDir {volume['name']}"
                )


@pytest.mark.parametrize(
    "cpu, processes, cores",
    [("2", 1, "2"), ("4", 2, "4"), ("500m", 1, "1"), ("2500m", 2, "2"), (6, 4, "6")],
)
def test_the_workers_cores_follow_the_cpu_request_not_the_nodes(cpu, processes, cores):
    # the worker shares them out over its processes and sizes replicas and threads from them
    objects = render(
        {
            "resources": {"requests": {"cpu": cpu}},
            "processes": processes,
            "kafka": {"partitions": 12},
        }
    )
    env = config(objects)
    assert env["EMBED_MODEL__CPU_CORES"] == cores
    assert "EMBED_MODEL__TORCH_THREADS" not in env  # the worker chooses them from the cores


def test_explicit_torch_threads_are_passed_on():
    env = config(render({"torchThreads": 2, "resources": {"requests": {"cpu": "8"}}}))
    assert env["EMBED_MODEL__TORCH_THREADS"] == "2" and env["EMBED_MODEL__CPU_CORES"] == "8"


def test_big_numbers_render_as_integers_the_worker_and_keda_can_parse():
    # Helm reads numbers as float64 and would print 1000000 as 1e+06
    objects = render(
        {
            "config": {"EMBED_BATCH__MAX_PENDING": 1000000},
            "autoscaling": {"keda": {"enabled": True, "lagThreshold": 2000000}},
        },
        api_versions=(KEDA,),
    )
    assert config(objects)["EMBED_BATCH__MAX_PENDING"] == "1000000"
    assert (
        one(objects, "ScaledObject")["spec"]["triggers"][0]["metadata"]["lagThreshold"] == "2000000"
    )


def test_a_recreate_rollout_renders_without_rolling_update_settings():
    strategy = worker(render({"strategy": {"type": "Recreate"}}))["spec"]["strategy"]
    assert strategy == {"type": "Recreate"}


def test_the_release_keeps_chart_0_2s_names_so_an_upgrade_replaces_nothing_stateful():
    # a name change would give the sink a new StatefulSet and an empty index volume
    objects = render({"sink": {"enabled": True}, "redis": {"deploy": True}}, release="embed-worker")
    assert worker(objects)["metadata"]["name"] == "embed-worker-embed-worker"
    assert one(objects, "StatefulSet")["metadata"]["name"] == "embed-worker-embed-worker-sink"
    assert (
        one(objects, "Service", "-redis")["metadata"]["name"] == "embed-worker-embed-worker-redis"
    )  # the URL workers use
    # the Redis Deployment's selector changed, and a selector cannot be patched: it takes a new name
    assert (
        one(objects, "Deployment", "-dedup-redis")["metadata"]["name"]
        == "embed-worker-embed-worker-dedup-redis"
    )


def test_the_workers_cores_fall_back_on_the_cpu_limit():
    objects = render(
        {
            "resources": {
                "requests": {"cpu": None, "memory": "4Gi"},
                "limits": {"cpu": "3", "memory": "8Gi"},
            }
        }
    )
    assert config(objects)["EMBED_MODEL__CPU_CORES"] == "3"


def test_a_config_key_the_chart_also_sets_is_rendered_once_with_the_users_value():
    objects = render(
        {"config": {"EMBED_MODEL__NAME": "/models/e5", "EMBED_LONG_TEXT__POLICY": "chunk"}}
    )  # the loader refuses duplicate keys
    assert (
        config(objects)["EMBED_MODEL__NAME"] == "/models/e5"
        and config(objects)["EMBED_LONG_TEXT__POLICY"] == "chunk"
    )


@pytest.mark.parametrize(
    "overlay, message",
    [
        ({"kafka": {"partition": 3}}, "additional properties 'partition'"),
        ({"kafka": {"securityProtocol": "TLS"}}, "securityProtocol"),
        ({"model": {"dtype": "fp16"}}, "dtype"),
        ({"processes": 0}, "processes"),
        ({"image": {"digest": "latest"}}, "digest"),
        ({"config": {"EMBED_PROCESSES": "2"}}, "set that instead"),
    ],
)
def test_the_schema_and_guards_reject_bad_values_with_the_setting_named(overlay, message):
    assert message in refused(overlay)


@pytest.mark.parametrize(
    "overlay, release",
    [
        pytest.param(
            {}, "a-long-release-name-for-an-embedding-fleet-in-prod-x", id="longest-release-name"
        ),  # Helm allows 53
        pytest.param(
            {"fullnameOverride": "a-very-long-release-name-for-an-embedding-fleet-in-production-x"},
            "embed",
            id="fullname-override",
        ),
    ],
)
def test_names_and_labels_fit_in_63_characters(overlay, release):
    objects = render(EVERYTHING, overlay, api_versions=ALL_APIS, release=release)
    for o in objects:
        assert len(o["metadata"]["name"]) <= 63, o["metadata"]["name"]
        for value in o["metadata"].get("labels", {}).values():
            assert len(str(value)) <= 63, value
        if (
            o["kind"] == "StatefulSet"
        ):  # its pods' controller-revision-hash label is the name + 11 characters
            assert len(o["metadata"]["name"]) <= 52, o["metadata"]["name"]
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names)), "two objects of one kind share a name"


def test_the_image_defaults_to_the_app_version_and_a_digest_pins_it():
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert container(worker(render()))["image"] == f"embed-worker:{app_version}"
    assert (
        container(worker(render("values-gpu.yaml")))["image"] == f"embed-worker:{app_version}-cuda"
    )
    digest = "sha256:" + "ab" * 32
    assert (
        container(worker(render({"image": {"digest": digest}})))["image"]
        == f"embed-worker@{digest}"
    )


def test_the_sink_has_its_service_ports_and_probes():
    objects = render({"sink": {"enabled": True}})
    sink = one(objects, "StatefulSet")
    service = one(objects, "Service", sink["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None" and matches(
        {"matchLabels": service["spec"]["selector"]}, sink["spec"]["template"]["metadata"]["labels"]
    )
    c = container(sink)
    assert c["ports"][0]["name"] == "metrics"
    assert (
        c["startupProbe"]["httpGet"]["path"],
        c["livenessProbe"]["httpGet"]["path"],
        c["readinessProbe"]["httpGet"]["path"],
    ) == ("/startupz", "/healthz", "/readyz")


def test_debezium_input_reaches_the_worker_and_needs_a_template():
    objects = render(
        {
            "input": {
                "format": "debezium",
                "textTemplate": "{title}\n\n{body}",
                "metadataFields": "lang",
            }
        }
    )
    env = config(objects)
    assert (
        env["EMBED_INPUT__FORMAT"],
        env["EMBED_INPUT__TEXT_TEMPLATE"],
        env["EMBED_INPUT__METADATA_FIELDS"],
    ) == ("debezium", "{title}\n\n{body}", "lang")
    assert "needs input.textTemplate" in refused({"input": {"format": "debezium"}})
    assert "set input.format" in refused({"input": {"idField": "id"}})


def test_a_postgres_sink_takes_its_url_from_a_secret_and_needs_no_volume():
    objects = render(
        {"sink": {"enabled": True, "store": "postgres", "postgresUrlSecret": {"name": "pg"}}}
    )
    sink = one(objects, "StatefulSet")
    env = env_of(container(sink))
    assert env["EMBED_SINK__STORE"]["value"] == "postgres"
    assert env["EMBED_SINK__POSTGRES_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "pg",
        "key": "url",
    }
    assert "volumeClaimTemplates" not in sink["spec"]
    assert "needs sink.postgresUrlSecret" in refused(
        {"sink": {"enabled": True, "store": "postgres"}}
    )


def test_the_hub_is_switched_off_only_for_a_local_model():
    assert "HF_HUB_OFFLINE" not in config(render())
    assert config(render({"model": {"name": "/models/e5"}}))["HF_HUB_OFFLINE"] == "1"


def test_static_membership_takes_the_pod_name():
    w = container(worker(render({"kafka": {"staticMembership": True}})))
    assert (
        env_of(w)["EMBED_KAFKA__GROUP_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
        == "metadata.name"
    )
    assert "EMBED_KAFKA__GROUP_INSTANCE_ID" not in env_of(container(worker(render())))


def test_extras_service_account_scheduling_and_rollout_reach_the_pod():
    objects = render(EVERYTHING, api_versions=ALL_APIS)
    w = worker(objects)
    pod = w["spec"]["template"]["spec"]
    c = container(w)
    assert (
        env_of(c)["EXTRA"]["value"] == "1"
        and {"secretRef": {"name": "more-settings"}} in c["envFrom"]
    )
    assert any(v["name"] == "cache" for v in pod["volumes"]) and any(
        m["mountPath"] == "/cache" for m in c["volumeMounts"]
    )
    assert pod["serviceAccountName"] == one(objects, "ServiceAccount")["metadata"]["name"]
    assert (pod["priorityClassName"], pod["runtimeClassName"]) == ("batch-high", "nvidia")
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["labelSelector"]["matchLabels"] == w["spec"]["selector"]["matchLabels"]
    default = worker(render())["spec"]["strategy"]["rollingUpdate"]
    assert default["maxSurge"] == 0, "the default rollout must not need a spare GPU"


def test_a_broken_template_fails_the_render(tmp_path):
    # the checks above are only worth something if a template error does surface
    broken = tmp_path / "embed-worker"
    shutil.copytree(CHART, broken)
    (broken / "templates" / "broken.yaml").write_text("{{ .Values.no.such.value }}\n")
    assert render_result(chart=broken)["error"]


def test_an_object_kubernetes_would_reject_is_reported(tmp_path):
    broken = tmp_path / "embed-worker"
    shutil.copytree(CHART, broken)
    (broken / "templates" / "bad.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: bad\nspec:\n  ports:\n    - port: 80\n      protocl: TCP\n"
    )
    assert any("bad" in line for line in render_result(chart=broken)["invalid"])


def test_dockerfile_passes_hadolint():
    proc = subprocess.run(
        [ops_tool("hadolint"), "--config", str(REPO / ".hadolint.yaml"), str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
