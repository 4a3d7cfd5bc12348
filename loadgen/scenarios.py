"""The fault-injection suite: each scenario publishes a known set of documents, injects one kind of
fault into real worker processes, the real broker or the real Redis, waits until the group has
committed everything, and accounts for every input in the output and dead-letter topics.

``embed-loadgen faults`` runs them (``--size full`` is the issue's sizes, ``ci`` a smaller form that
the test suite runs). A scenario passes when nothing is lost, every bad payload is dead-lettered
with its reason, and no worker died that the scenario did not kill.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import cast

from loadgen.faults import (
    Audit,
    Lab,
    Progress,
    Workers,
    audit,
    end_offsets,
    process_env,
    publish_payloads,
)
from loadgen.fuzz import Fuzzer, Payload
from loadgen.synthetic import SyntheticSpec, generate
from worker.consume.decode import content_hash, encode_document
from worker.publish.codec import decode_output
from worker.sink.index import Index


@dataclass(frozen=True)
class Sizes:
    docs: int  # documents per scenario (fuzz: valid ones mixed in)
    kills: int  # kill -9 rounds
    freeze_s: float  # broker frozen (SIGSTOP)
    redis_down_s: float  # Redis killed, then restarted
    fuzz: int  # fuzzed payloads
    huge_text_bytes: int  # the largest fuzzed text
    partitions: int = 4
    timeout_s: float = 900.0  # per scenario, until everything is committed


SIZES = {
    "full": Sizes(
        docs=5000,
        kills=20,
        freeze_s=15,
        redis_down_s=30,
        fuzz=10_000,
        huge_text_bytes=10 * 1024 * 1024,
    ),
    "ci": Sizes(
        docs=400,
        kills=3,
        freeze_s=15,
        redis_down_s=8,
        fuzz=1200,
        huge_text_bytes=2 * 1024 * 1024,
        timeout_s=300,
    ),
}


@dataclass
class Outcome:
    scenario: str
    published: int = 0
    vectors_out: int = 0
    lost: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    wrong_reason: int = 0
    crashes: int = 0
    wall_s: float = 0.0
    notes: str = ""
    details: list[str] = field(default_factory=list)
    exactly_once: bool = False  # then duplicates must be 0 too, as read_committed readers see them
    stale: int | None = (
        None  # ids whose index (built by the real sink) differs from the expected final state; None: not judged
    )

    @property
    def passed(self) -> bool:
        return (
            self.lost == 0
            and self.wrong_reason == 0
            and self.crashes == 0
            and not (self.exactly_once and self.duplicates)
            and not self.stale
        )

    def to_json(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def documents(n: int, seed: int, prefix: str) -> list[Payload]:
    """Valid documents with unique ids (30–120 tokens), as payloads expecting a vector each."""
    spec = SyntheticSpec(n, "30-120", seed=seed, prefix=prefix)
    return [
        Payload(
            d["id"].encode(),
            encode_document(d["id"], d["text"]),
            "embed",
            d["id"],
            d["text"],
            "valid",
        )
        for d in generate(spec)
    ]


class Scenario:
    """One run: its topics, its workers, its payloads; ``finish`` waits, stops and audits."""

    def __init__(
        self, lab: Lab, name: str, sizes: Sizes, payloads: list[Payload], **env: str
    ) -> None:
        self.lab, self.name, self.sizes = lab, name, sizes
        self.exactly_once = env.get("EMBED_KAFKA__EXACTLY_ONCE") == "true"
        self.started = time.monotonic()
        self.run = lab.new_run(name, sizes.partitions)
        self.workers = Workers(self.run, lab.dir, {**lab.worker_env, **env})
        self.payloads = payloads
        self.placed = publish_payloads(lab.kafka, self.run.input_topic, payloads)
        self.progress = Progress(lab.kafka, self.run, end_offsets(self.placed))
        self.notes: list[str] = []

    def publish(self, payloads: list[Payload]) -> None:
        """More payloads, after the first ones (the wait for a full commit covers them too)."""
        placed = publish_payloads(self.lab.kafka, self.run.input_topic, payloads)
        base = len(self.payloads)
        self.payloads = self.payloads + payloads
        self.placed.update({where: base + i for where, i in placed.items()})
        self.progress.extend(end_offsets(placed))

    def finish(self, *, restart: bool = False) -> Outcome:
        done = self.progress.wait_done(self.sizes.timeout_s, self.workers, restart=restart)
        if not done:
            self.notes.append(f"not all committed within {self.sizes.timeout_s:.0f} s")
        for p in self.workers.alive():
            code = self.workers.stop(p)
            if code == -signal.SIGTERM and not self.workers.tail(p):
                continue  # stopped while the interpreter was still starting: it had nothing to finish
            if code != 0:
                self.workers.crashes.append(
                    f"worker {p.pid} exited {code} after SIGTERM: {self.workers.tail(p)}"
                )
        self.progress.close()
        wall = time.monotonic() - self.started
        result: Audit = audit(
            self.lab.kafka, self.run, self.payloads, self.placed, committed_only=self.exactly_once
        )
        return Outcome(
            self.name,
            result.published,
            result.vectors_out,
            len(result.lost),
            result.duplicates,
            result.dead_lettered,
            len(result.wrong_reason),
            len(self.workers.crashes),
            round(wall, 1),
            "; ".join(self.notes),
            (result.lost + result.wrong_reason + self.workers.crashes)[:20],
            self.exactly_once,
        )


# Exactly-once runs without Redis, so that the transactions alone (not dedup) keep duplicates out of
# what read_committed readers see. Only where no transaction is aborted: the local broker (tansu)
# shows aborted records to read_committed readers, and neither a successor's InitProducerId nor the
# transaction timeout aborts a dead producer's transaction, so kill -9 and rebalance runs cannot be
# judged on it (Kafka does all three).
# MAX_PENDING as docs/operations.md advises for exactly-once: what is polled drains within the grace.
EXACTLY_ONCE = {
    "EMBED_KAFKA__EXACTLY_ONCE": "true",
    "EMBED_REDIS__DEDUP": "false",
    "EMBED_BATCH__MAX_PENDING": "256",
}


def kill9(lab: Lab, sizes: Sizes, rnd: random.Random) -> Outcome:
    sc = Scenario(lab, "kill9", sizes, documents(sizes.docs, 1, "k9"))
    kills = 0
    proc = sc.workers.start()
    while kills < sizes.kills and not sc.progress.done():
        if not sc.workers.assigned(proc):
            break  # it died on its own: counted as a crash
        time.sleep(rnd.uniform(0.2, 3.0))  # a random moment of its work
        sc.workers.kill(proc)
        proc.wait()
        kills += 1
        proc = sc.workers.start()
    sc.notes.append(f"{kills} kill -9")
    return sc.finish()


def _outage(sc: Scenario, settle_s: float, down, up, down_s: float, note: str) -> Outcome:
    """One worker; once it has partitions and ``settle_s`` passed, ``down()``, ``down_s`` later ``up()``."""
    proc = sc.workers.start()
    if sc.workers.assigned(proc):
        time.sleep(settle_s)
        down()
        time.sleep(down_s)
        up()
        sc.notes.append(note)
    return sc.finish()


def broker_freeze(lab: Lab, sizes: Sizes, rnd: random.Random) -> Outcome:
    sc = Scenario(lab, "broker-freeze", sizes, documents(sizes.docs, 2, "bf"))
    return _outage(
        sc,
        2.0,
        lab.freeze_broker,
        lab.thaw_broker,
        sizes.freeze_s,
        f"broker frozen {sizes.freeze_s:.0f} s",
    )


def redis_outage(lab: Lab, sizes: Sizes, rnd: random.Random, mode: str = "open") -> Outcome:
    # a small MAX_PENDING: documents keep being polled (and looked up) during the outage
    sc = Scenario(
        lab,
        f"redis-down-{mode}",
        sizes,
        documents(sizes.docs, 3, f"rd{mode}"),
        EMBED_REDIS__ON_ERROR=mode,
        EMBED_BATCH__MAX_PENDING="128",
    )
    return _outage(
        sc,
        1.0,
        lab.kill_redis,
        lab.restart_redis,
        sizes.redis_down_s,
        f"Redis down {sizes.redis_down_s:.0f} s, fail-{mode}",
    )


def scale(lab: Lab, sizes: Sizes, rnd: random.Random) -> Outcome:
    sc = Scenario(
        lab, "scale-1-3-1", sizes, documents(max(sizes.docs, 1500), 4, "sc")
    )  # enough to outlast two model loads
    first = sc.workers.start()
    if sc.workers.assigned(first):
        extra = [sc.workers.start(), sc.workers.start()]
        for p in extra:
            sc.workers.assigned(p)
        time.sleep(4.0)
        for p in extra:
            code = sc.workers.stop(p)
            if code != 0:
                sc.workers.crashes.append(
                    f"worker {p.pid} exited {code} after SIGTERM while scaling down"
                )
        sc.notes.append("1 → 3 → 1 workers")
    return sc.finish()


def sigterm(lab: Lab, sizes: Sizes, rnd: random.Random, exactly_once: bool = False) -> Outcome:
    env = EXACTLY_ONCE if exactly_once else {}
    sc = Scenario(
        lab,
        "sigterm" + ("-exactly-once" if exactly_once else ""),
        sizes,
        documents(sizes.docs, 8 if exactly_once else 5, "st"),
        **env,
    )
    proc = sc.workers.start()
    if sc.workers.assigned(proc):
        deadline = time.monotonic() + 60
        while sc.progress.committed() == 0 and time.monotonic() < deadline:
            time.sleep(0.2)  # mid-run: the first commit is in, the rest in flight
        time.sleep(rnd.uniform(0.0, 1.0))
        started = time.monotonic()
        code = sc.workers.stop(proc)
        sc.notes.append(f"SIGTERM mid-run: exit {code} after {time.monotonic() - started:.1f} s")
        if code != 0:
            sc.workers.crashes.append(f"exit {code} after SIGTERM: {sc.workers.tail(proc)}")
        if not sc.progress.done():  # what it left uncommitted is for the next worker
            sc.workers.start()
    return sc.finish()


def fuzz(lab: Lab, sizes: Sizes, rnd: random.Random) -> Outcome:
    payloads = list(
        Fuzzer(
            seed=11, huge_text_bytes=sizes.huge_text_bytes, huge_every=max(1, sizes.fuzz // 4)
        ).payloads(sizes.fuzz)
    )
    sc = Scenario(lab, "fuzz", sizes, payloads)
    sc.workers.start()
    outcome = sc.finish()
    bad = sum(1 for p in payloads if p.expect not in ("embed", "delete", "superseded"))
    outcome.notes = f"{bad} hostile payloads among {len(payloads)}" + (
        f"; {outcome.notes}" if outcome.notes else ""
    )
    return outcome


def _payload(doc_id: str, text: str | None, metadata: dict | None = None) -> Payload:
    """An upsert (or, with no text, a delete) of ``doc_id``, expecting its output."""
    if text is None:
        return Payload(
            doc_id.encode(), encode_document(doc_id, op="delete"), "delete", doc_id, None, "delete"
        )
    return Payload(
        doc_id.encode(),
        encode_document(doc_id, text, metadata=metadata),
        "embed",
        doc_id,
        text,
        "valid",
    )


def redis_down_recreate(lab: Lab, sizes: Sizes, rnd: random.Random) -> Outcome:
    """Redis frozen (its marks kept) while most documents are deleted; after it, some are
    re-created as they were, some with new text, and the others, never deleted, get new metadata
    only. The real sink builds an index of the output, which must equal the expected final state.
    (A delete whose mark could not be cleared used to leave it, and the copy re-created as it was
    was skipped against it; a change of metadata alone was a dedup hit.)"""
    n = max(sizes.docs // 2, 40)
    base = cast(  # documents() names every payload's id and text
        "dict[str, str]", {d.doc_id: d.text for d in documents(n, 12, "rr")}
    )
    ids = list(base)
    deleted, retagged = ids[: n * 3 // 4], ids[n * 3 // 4 :]
    sc = Scenario(
        lab, "redis-down-recreate", sizes, [_payload(i, t, {"v": 1}) for i, t in base.items()]
    )
    expected: dict[str, tuple[str, dict] | None] = {i: (base[i], {"v": 1}) for i in ids}
    proc = sc.workers.start()
    if sc.workers.assigned(proc) and sc.progress.wait_done(
        sizes.timeout_s, sc.workers
    ):  # every mark written
        lab.freeze_redis()
        began = time.monotonic()
        for k in range(
            8
        ):  # the deletes flow through the outage: some marks are tried and time out, others wait
            sc.publish([_payload(i, None) for i in deleted[k::8]])
            time.sleep(sizes.redis_down_s * 0.6 / 8)
        time.sleep(max(0.0, sizes.redis_down_s - (time.monotonic() - began)))
        lab.thaw_redis()
        again = []
        for k, i in enumerate(deleted):
            if k % 3 == 0:
                expected[i] = None  # stays deleted
                continue
            text = base[i] if k % 3 == 1 else base[i] + " (revised)"
            expected[i] = (text, {"v": 1})
            again.append(_payload(i, text, {"v": 1}))
        for i in retagged:
            expected[i] = (base[i], {"v": 2})
            again.append(_payload(i, base[i], {"v": 2}))
        sc.publish(again)
        sc.notes.append(
            f"Redis frozen {sizes.redis_down_s:.0f} s during {len(deleted)} deletes; {len(again)} re-created or re-tagged after"
        )
    outcome = sc.finish()
    found = index_state(lab, sc, f"{sc.run.name}-sink")
    want = {i: (content_hash(t), m) for i, v in expected.items() if v is not None for t, m in [v]}
    stale = sorted(i for i in ids if found.get(i) != want.get(i))
    outcome.stale = len(stale)
    outcome.details += [
        f"stale in the index: {i}: {found.get(i)} instead of {want.get(i)}" for i in stale[:10]
    ]
    return outcome


def index_state(lab: Lab, sc: Scenario, group: str) -> dict[str, tuple[str, dict]]:
    """Run the real sink over the run's output topic into a fresh index; document id → (content
    hash, metadata) of its points there."""
    from worker.config import MetricsSettings, Settings, SinkSettings
    from worker.sink.consumer import run_sink

    path = lab.dir / f"{sc.run.name}.index"
    settings = Settings(
        kafka=lab.kafka.model_copy(update={"output_topic": sc.run.output_topic}),
        sink=SinkSettings(path=str(path), group_id=group),
        metrics=MetricsSettings(enabled=False),
    )
    run_sink(settings, threading.Event(), exit_when_idle_s=3.0)
    return {
        r["parent_id"]: (r["content_hash"], json.loads(r["metadata"]))
        for r in Index(str(path), "documents").rows()
    }


def model_switch(lab: Lab, sizes: Sizes, rnd: random.Random) -> Outcome:
    """Mid-stream, the fleet is restarted with another model on the same topics and group (a
    rollout done the wrong way). The real sink runs throughout: it must keep running, keep the first
    model's vectors, and count every vector of the second it leaves out."""
    from loadgen.hostpath import tiny_model
    from loadgen.readback import read_topic

    sc = Scenario(lab, "model-switch", sizes, documents(max(sizes.docs, 1200), 13, "ms"))
    summary, path = lab.dir / f"{sc.run.name}.sink.json", lab.dir / f"{sc.run.name}.index"
    group = f"{sc.run.name}-sink"
    env = process_env(
        sc.run, EMBED_SINK__PATH=str(path), EMBED_SINK__GROUP_ID=group, EMBED_METRICS__PORT="0"
    )
    with open(lab.dir / f"{sc.run.name}.sink.log", "wb") as out:
        sink = subprocess.Popen(
            [sys.executable, "-m", "worker", "sink", "--summary-file", str(summary)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    second = tiny_model(lab.dir / "tiny-bert")
    first = sc.workers.start()
    total = len(sc.payloads)
    if sc.workers.assigned(first):
        deadline = time.monotonic() + sizes.timeout_s
        while sc.progress.committed() < total // 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        code = sc.workers.stop(first)
        sc.workers.env["EMBED_MODEL__NAME"] = str(second)
        sc.workers.start()
        sc.notes.append(
            f"switched to a 32-dimension model after {sc.progress.committed()} of {total} (exit {code})"
        )
    outcome = sc.finish()
    outputs = read_topic(lab.kafka, sc.run.output_topic, timeout_s=60)
    ends = end_offsets({(r.partition, r.offset): i for i, r in enumerate(outputs)})
    caught_up = Progress(lab.kafka, sc.run, ends, group=group, topic=sc.run.output_topic)
    caught_up.wait_done(120)
    caught_up.close()
    alive = sink.poll() is None
    sink.terminate()
    code = sink.wait(timeout=60)
    if not alive or code != 0:
        outcome.crashes += 1
        outcome.details.append(f"the sink {'died' if not alive else 'exited'} with {code}")
    bodies = [decode_output(r.value) for r in outputs if r.value is not None]
    newer = sum(1 for b in bodies if b["op"] == "upsert" and b["model"] == str(second))
    left_out = json.loads(summary.read_text())["other_model"] if summary.exists() else -1
    outcome.notes += f"; the sink left out {left_out} of {newer} vectors of the new model"
    kept = {b["id"] for b in bodies if b["op"] == "upsert" and b["model"] != str(second)}
    rows = {r["parent_id"] for r in Index(str(path), "documents").rows()}
    outcome.stale = len(rows ^ kept) + (
        0 if left_out >= newer > 0 else 1
    )  # a replay counts its vectors again
    return outcome


SCENARIOS: dict[str, Callable[[Lab, Sizes, random.Random], Outcome]] = {
    "kill9": kill9,
    "broker-freeze": broker_freeze,
    "redis-down": redis_outage,
    "redis-down-closed": lambda lab, sizes, rnd: redis_outage(lab, sizes, rnd, "closed"),
    "scale": scale,
    "sigterm": sigterm,
    "fuzz": fuzz,
    "sigterm-exactly-once": lambda lab, sizes, rnd: sigterm(lab, sizes, rnd, exactly_once=True),
    "redis-down-recreate": redis_down_recreate,
    "model-switch": model_switch,
}


def run_suite(
    names: list[str],
    size: str,
    state_dir: str,
    seed: int = 1,
    report: Callable[[Outcome], None] = lambda o: None,
    client: str | None = None,
) -> list[Outcome]:
    """``client``: the Kafka client of the workers and the lab (None: the default)."""
    sizes = SIZES[size]
    lab = Lab(state_dir, client)
    outcomes = []
    try:
        for name in names:
            outcome = SCENARIOS[name](lab, sizes, random.Random(seed))
            report(outcome)
            outcomes.append(outcome)
    finally:
        lab.close()
    return outcomes


HEADER = (
    "scenario",
    "published",
    "vectors out",
    "lost",
    "duplicates",
    "dead-lettered",
    "wrong reason",
    "crashes",
    "stale in index",
    "wall s",
    "notes",
)


def table_row(o: Outcome) -> list[str]:
    return [
        o.scenario,
        str(o.published),
        str(o.vectors_out),
        str(o.lost),
        str(o.duplicates),
        str(o.dead_lettered),
        str(o.wrong_reason),
        str(o.crashes),
        "–" if o.stale is None else str(o.stale),
        f"{o.wall_s:.1f}",
        o.notes,
    ]
