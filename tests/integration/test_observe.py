"""Metrics, health and logs of a real worker process during a real run."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadgen.corpus import sample_corpus
from worker.observe.metrics import STAGES
from worker.stack.devstack import free_port

pytestmark = pytest.mark.integration


def get(port: int, path: str) -> tuple[int, str] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return None  # not listening yet


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    _, text = get(port, "/metrics")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples, name, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_metrics_health_and_readiness_during_a_real_run(lane):
    port = free_port()
    proc = lane.start_worker(
        EMBED_METRICS__PORT=str(port), EMBED_LOG_FORMAT="json", EMBED_LOG_INTERVAL_S="1"
    )
    try:
        # readiness: not ready while the model loads and warms up, ready once it consumes
        seen = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            ready = get(port, "/readyz")
            if ready is not None:
                seen.append(ready)
                if ready[0] == 200:
                    break
            time.sleep(0.05)
        assert seen and seen[-1][0] == 200, seen[-3:]
        assert seen[0][0] == 503, f"first readiness answer should be 'not ready', got {seen[0]}"
        assert get(port, "/healthz")[0] == 200

        docs = sample_corpus(300)
        lane.publish(docs)
        lane.publish_raw([(b"bad", b"\xc1 not msgpack")])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(lane.outputs()) < 300:
            time.sleep(0.5)
        time.sleep(2.5)  # a commit interval and a progress tick after the last vector

        m = scrape(port)
        assert value(m, "embed_documents_total") == 300
        assert (
            value(m, "embed_input_messages_total") == 301
        )  # the vectors and the dead letter, reconciled
        assert value(m, "embed_tokens_total") > 300
        assert value(m, "embed_dlq_messages_total", reason="undecodable") == 1
        assert (
            value(m, "embed_dedup_misses_total") == 300 and value(m, "embed_dedup_hits_total") == 0
        )
        assert value(m, "embed_redis_errors_total") == 0
        batches = sum(
            value(m, "embed_batches_total", reason=r)
            for r in ("token_budget", "size", "deadline", "drain")
        )
        assert batches == value(m, "embed_batch_size_count") >= 1
        assert value(m, "embed_batch_size_sum") == 300
        assert 0.3 < value(m, "embed_padding_efficiency_ratio_sum") / batches <= 1.0
        for stage in STAGES:
            assert value(m, "embed_stage_duration_seconds_count", stage=stage) >= 1, stage
        assert value(m, "embed_stage_duration_seconds_sum", stage="forward") > 0
        assert value(m, "embed_end_to_end_latency_seconds_count") == 300
        assert 0 < value(m, "embed_end_to_end_latency_seconds_sum") / 300 < 120
        assert value(m, "embed_commit_duration_seconds_count") >= 1
        lags = {k: v for k, v in m.items() if k[0] == "embed_consumer_lag_messages"}
        assert len(lags) == 3 and all(v == 0 for v in lags.values())
        assert value(m, "embed_inflight_documents") == 0
        assert value(m, "embed_rebalances_total") >= 1
        assert value(m, "embed_model_load_seconds") > 0
        assert value(m, "embed_ready") == 1
        info = next(k for k in m if k[0] == "embed_build_info")
        assert (
            dict(info[1])["model"] == "sentence-transformers/all-MiniLM-L6-v2"
            and dict(info[1])["dim"] == "384"
        )
        assert time.time() - value(m, "embed_last_poll_timestamp_seconds") < 5
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0

    # JSON logs: every line an object; progress lines carry their figures as fields
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "message"} <= set(entry) for entry in lines)
    progress = [e for e in lines if e["logger"] == "worker.progress"]
    assert progress and progress[-1]["embedded"] == 300 and progress[-1]["lag"] == 0


def test_a_port_in_use_is_a_clear_configuration_error(lane):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = lane.start_worker(EMBED_METRICS__PORT=str(port), EMBED_METRICS__HOST="127.0.0.1")
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert (
        stderr.strip()
        .splitlines()[-1]
        .startswith("embed-worker: invalid setting EMBED_METRICS__PORT")
    )


def test_startup_waits_for_the_warm_model_and_liveness_fails_while_a_forward_pass_outlasts_its_limit(
    lane,
):
    # /healthz answered 200 during the whole model load (a startup probe on it gated nothing), and
    # watched only the main loop, which polls on while a wedged forward pass embeds nothing
    words = [
        "stream",
        "vector",
        "kafka",
        "offset",
        "batch",
        "token",
        "model",
        "index",
        "queue",
        "shard",
    ]
    lane.publish(
        [
            {"id": f"long-{i}", "text": " ".join(words[(i + k) % 10] for k in range(400))}
            for i in range(192)
        ]
    )
    port = free_port()
    # a full batch (64 documents of 256 tokens) takes a few seconds on these CPUs: longer than the limit
    proc = lane.start_worker(
        EMBED_METRICS__PORT=str(port),
        EMBED_METRICS__STALL_AFTER_S="1.0",
        EMBED_BATCH__MAX_TOKENS="16384",
        EMBED_BATCH__MAX_SIZE="64",
        EMBED_BATCH__MAX_WAIT_MS="2000",
    )
    try:
        startup, health = [], []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and len(lane.outputs()) < 192:
            for path, seen in (("/startupz", startup), ("/healthz", health)):
                answer = get(port, path)
                if answer is not None:
                    seen.append(answer)
            time.sleep(0.1)
        assert startup and startup[0][0] == 503 and "warming up" in startup[0][1]
        assert startup[-1][0] == 200
        first_ok = next(i for i, a in enumerate(startup) if a[0] == 200)
        assert all(a[0] == 200 for a in startup[first_ok:])  # started stays started
        stuck = [a for a in health if a[0] == 503]
        assert stuck and all("forward pass" in a[1] for a in stuck), health[-5:]
        assert health[0][0] == 200  # alive while the model loaded
        time.sleep(1.5)
        assert get(port, "/healthz")[0] == 200  # nothing in the model: live again
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
