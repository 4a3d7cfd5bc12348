"""The fault lab: a broker, a Redis and worker processes this process owns, so it can freeze,
kill and restart them, and an audit that reads every output back and accounts for every input.

The lab runs its own stack in a state directory of its own (never the demo's), one run (topics,
group, Redis namespace) per scenario. Workers are real ``embed-worker run`` processes; their logs
go to files in the state directory, and ``assigned`` waits for one to own partitions.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from loadgen.fuzz import ANY_REASON, Payload
from loadgen.readback import read_topic
from worker.config import KafkaSettings
from worker.deadline import Deadline
from worker.errors import TransportError
from worker.publish.codec import decode_output
from worker.stack.devstack import DevStack, LocalRun, create_topics, start_redis
from worker.transport import transport

WORKER_ENV = {
    # short group timings so a rebalance takes seconds, and frequent commits
    "EMBED_KAFKA__MAX_POLL_INTERVAL_MS": "10000",
    "EMBED_KAFKA__SESSION_TIMEOUT_MS": "6000",
    "EMBED_KAFKA__HEARTBEAT_INTERVAL_MS": "1000",
    "EMBED_KAFKA__COMMIT_INTERVAL_MS": "500",
    "EMBED_KAFKA__REQUEST_TIMEOUT_MS": "5000",
    "EMBED_LOG_INTERVAL_S": "5",
    "EMBED_SHUTDOWN_GRACE_S": "20",
}


class Lab:
    """The stack (broker + Redis) with handles to freeze, kill and restart them."""

    def __init__(self, state_dir: str | Path, client: str | None = None) -> None:
        """``client``: the Kafka client of the workers and of the lab itself (None: the default)."""
        self.dir = Path(state_dir).resolve()
        self.stack = DevStack(self.dir)
        self.addresses = self.stack.up()
        self.kafka = KafkaSettings(
            bootstrap_servers=self.addresses.kafka,
            max_message_bytes=32 * 1024 * 1024,
            client=client or "auto",
        )
        self.worker_env = {"EMBED_KAFKA__CLIENT": client} if client else {}

    def _pid(self, name: str) -> int:
        return int((self.dir / f"{name}.pid").read_text())

    def freeze_broker(self) -> None:
        os.kill(self._pid("kafka"), signal.SIGSTOP)

    def thaw_broker(self) -> None:
        os.kill(self._pid("kafka"), signal.SIGCONT)

    def freeze_redis(self) -> None:
        """SIGSTOP: calls time out, and what Redis held is still there when it is thawed (a
        network partition, say); a kill loses it all, as this Redis keeps nothing on disk."""
        os.kill(self._pid("redis"), signal.SIGSTOP)

    def thaw_redis(self) -> None:
        os.kill(self._pid("redis"), signal.SIGCONT)

    def kill_redis(self) -> None:
        os.kill(self._pid("redis"), signal.SIGKILL)

    def restart_redis(self) -> None:
        port = int((self.dir / "redis.port").read_text())
        proc = start_redis(port, self.dir, self.dir / "redis.log")
        (self.dir / "redis.pid").write_text(str(proc.pid))

    def new_run(self, name: str, partitions: int) -> LocalRun:
        run = LocalRun(f"{name}-{time.strftime('%H%M%S')}-{os.getpid()}", self.addresses)
        create_topics(
            self.addresses.kafka,
            {run.input_topic: partitions, run.output_topic: partitions, f"{run.name}.dlq": 1},
        )
        return run

    def close(self) -> None:
        for thaw in (self.thaw_broker, self.thaw_redis):
            try:
                thaw()
            except (OSError, ValueError):
                pass
        self.stack.down()


def process_env(run: LocalRun, **extra: str) -> dict[str, str]:
    """The environment of an ``embed-worker`` process the lab starts for ``run``: the run's
    settings, ``extra``, and this checkout on the import path."""
    return {
        **run.env(),
        **extra,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(Path.cwd()), os.environ.get("PYTHONPATH")])
        ),
    }


@dataclass
class Workers:
    """The worker processes of one run; every exit not caused by the lab is counted as a crash."""

    run: LocalRun
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen] = field(default_factory=list)
    logs: dict[int, Path] = field(default_factory=dict)
    crashes: list[str] = field(default_factory=list)
    _expected: set[int] = field(default_factory=set)
    _count: int = 0

    def start(self) -> subprocess.Popen:
        self._count += 1
        log = self.log_dir / f"{self.run.name}.worker{self._count}.log"
        env = process_env(
            self.run, **WORKER_ENV, EMBED_KAFKA__CLIENT_ID=f"embed-worker-{self._count}", **self.env
        )
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "worker", "run"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        self.logs[proc.pid] = log
        return proc

    def alive(self) -> list[subprocess.Popen]:
        self._reap()
        return [p for p in self.procs if p.poll() is None]

    def _reap(self) -> None:
        for p in self.procs:
            if p.poll() is not None and p.pid not in self._expected:
                self._expected.add(p.pid)
                self.crashes.append(
                    f"worker {p.pid} exited {p.returncode} on its own; last lines: {self.tail(p)}"
                )

    def tail(self, proc: subprocess.Popen, lines: int = 3) -> str:
        text = self.logs[proc.pid].read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])

    def assigned(self, proc: subprocess.Popen, timeout_s: float = 90.0) -> bool:
        """Wait until this worker logs a partition assignment (its model is loaded and it consumes)."""
        deadline = Deadline(timeout_s)
        while not deadline.expired() and proc.poll() is None:
            if "partitions assigned" in self.logs[proc.pid].read_text(errors="replace"):
                return True
            time.sleep(0.1)
        return False

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        self._reap()
        self._expected.add(proc.pid)
        proc.send_signal(sig)

    def stop(self, proc: subprocess.Popen, timeout_s: float = 40.0) -> int | None:
        """SIGTERM and wait; returns the exit code (None if it had to be killed)."""
        self.kill(proc, signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None

    def stop_all(self) -> None:
        for p in self.alive():
            self.stop(p)


def publish_payloads(
    kafka: KafkaSettings, topic: str, payloads: list[Payload]
) -> dict[tuple[int, int], int]:
    """Send each payload (as is); returns (partition, offset) → index into ``payloads``."""
    producer = transport(kafka).producer(
        kafka.model_copy(update={"linger_ms": 20}), client_suffix="-faults"
    )
    placed: dict[tuple[int, int], int] = {}
    failed: list[str] = []

    def landed(i: int):
        def sent(err, partition: int, offset: int, _stamp: int) -> None:
            if err is not None:
                failed.append(str(err))
            else:
                placed[(partition, offset)] = i

        return sent

    try:
        for i, p in enumerate(payloads):
            producer.send(topic, p.key, p.value, landed(i))
            producer.poll()
        producer.flush(60)
    finally:
        producer.close()
    if failed:
        raise RuntimeError(f"{len(failed)} payloads not published: {failed[:3]}")
    return placed


def end_offsets(placed: dict[tuple[int, int], int]) -> dict[int, int]:
    ends: dict[int, int] = {}
    for partition, offset in placed:
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    return ends


class Progress:
    """The group's committed offsets against the input's end offsets."""

    def __init__(
        self,
        kafka: KafkaSettings,
        run: LocalRun,
        ends: dict[int, int],
        *,
        group: str | None = None,
        topic: str | None = None,
    ) -> None:
        """The workers' group on the input topic, or another ``group`` on another ``topic``."""
        quick = kafka.model_copy(update={"request_timeout_ms": 5000})  # the broker may be frozen
        self._consumer = transport(quick).consumer(quick, group_id=group or run.name)
        self._topic = topic or run.input_topic
        self._ends: dict[tuple[str, int], int] = {}
        self.extend(ends)

    def extend(self, ends: dict[int, int]) -> None:
        """More was published: these are the partitions' new ends."""
        for p, end in ends.items():
            tp = (self._topic, p)
            self._ends[tp] = max(self._ends.get(tp, 0), end)

    def committed(self) -> int:
        """Input messages below the committed offsets (0 while the broker does not answer)."""
        try:
            committed = self._consumer.committed(set(self._ends))
        except TransportError:
            return 0
        return sum(min(end, committed.get(tp) or 0) for tp, end in self._ends.items())

    def done(self) -> bool:
        return self.committed() >= sum(self._ends.values())

    def wait_done(
        self, timeout_s: float, workers: Workers | None = None, restart: bool = False
    ) -> bool:
        """Until everything is committed; with ``restart``, a crashed worker is replaced (as a
        Deployment would), otherwise a fleet with no live worker ends the wait."""
        deadline = Deadline(timeout_s)
        while not deadline.expired():
            if self.done():
                return True
            if workers is not None and not workers.alive():
                if not restart:
                    return False
                workers.start()
            time.sleep(0.5)
        return False

    def close(self) -> None:
        self._consumer.close()


@dataclass
class Audit:
    """What came out, accounted against what went in."""

    published: int = 0
    vectors_out: int = 0
    deletes_out: int = 0
    lost: list[str] = field(default_factory=list)  # payloads with no matching output, described
    duplicates: int = 0  # vector messages beyond one per (id, content) embedded
    dead_lettered: int = 0
    wrong_reason: list[str] = field(default_factory=list)
    reasons: Counter = field(default_factory=Counter)


def audit(
    kafka: KafkaSettings,
    run: LocalRun,
    payloads: list[Payload],
    placed: dict[tuple[int, int], int],
    *,
    committed_only: bool = False,
) -> Audit:
    """With ``committed_only`` the outputs are read as a ``read_committed`` consumer sees them."""
    out = read_topic(kafka, run.output_topic, timeout_s=60, committed_only=committed_only)
    dlq = read_topic(kafka, f"{run.name}.dlq", timeout_s=60, committed_only=committed_only)
    result = Audit(published=len(payloads), dead_lettered=len(dlq))
    vectors: dict[str, Counter] = defaultdict(Counter)  # id -> content hash -> messages
    deleted: set[str] = set()
    for r in out:
        if r.value is None:
            continue  # a tombstone
        body = decode_output(r.value)
        if body["op"] == "upsert":
            vectors[body["id"]][body["content_hash"]] += 1
            result.vectors_out += 1
        else:
            deleted.add(body["id"])
            result.deletes_out += 1
    result.duplicates = sum(n - 1 for hashes in vectors.values() for n in hashes.values())
    dead: dict[tuple[int, int], str] = {}
    for r in dlq:
        headers = dict(r.headers)
        dead[(int(headers["embed-source-partition"]), int(headers["embed-source-offset"]))] = (
            headers["embed-dlq-reason"].decode()
        )
    result.reasons = Counter(dead.values())
    for where, i in placed.items():
        p = payloads[i]
        if p.expect == "embed":
            assert p.doc_id is not None  # a payload expecting a vector names its document
            if vectors.get(p.doc_id, Counter()).get(p.expected_hash, 0) == 0:
                result.lost.append(f"{p.kind} {p.doc_id} at {where}")
        elif p.expect == "delete":
            if p.doc_id not in deleted:
                result.lost.append(f"delete {p.doc_id} at {where}")
        elif p.expect != "superseded":
            got = dead.get(where)
            if got is None:
                result.lost.append(f"{p.kind} at {where}: not dead-lettered")
            elif p.expect != ANY_REASON and got != p.expect:
                result.wrong_reason.append(f"{p.kind} at {where}: {got}, expected {p.expect}")
    return result
