"""The real worker process end to end: broker, Redis and model all real."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter

import msgpack
import numpy as np
import pytest

from loadgen.corpus import sample_corpus
from worker.consume.decode import content_hash
from worker.publish.codec import decode_output

pytestmark = pytest.mark.integration


@pytest.fixture(params=["confluent", "kafka-python"])
def lane(lane, request):
    """Every test here runs the worker with each Kafka client."""
    lane.client = request.param
    return lane


def mixed_docs(n: int) -> list[dict]:
    """n real documents spanning a few tokens to thousands (every long reference topic first)."""
    corpus = sample_corpus()
    longest = sorted(corpus, key=lambda d: -len(d["text"]))[: n // 5]
    rest = [d for d in corpus if d not in longest][: n - len(longest)]
    return longest + rest


def by_id(records) -> dict[str, dict]:
    out = {}
    for r in records:
        body = decode_output(r.value)
        assert body["id"] not in out, f"duplicate output for {body['id']}"
        out[body["id"]] = body
    return out


def cosine(a, b) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_documents_in_vectors_out_equal_to_sentence_transformers(lane, reference_model):
    docs = mixed_docs(300)
    report = lane.publish(docs)
    summary = lane.run_worker()
    assert summary["embedded"] == len(docs) and summary["dead_lettered"] == 0

    records = lane.outputs(expect=len(docs))
    outputs = by_id(records)
    assert set(outputs) == {d["id"] for d in docs}
    for r in records:
        assert (
            dict(r.headers)["embed-dim"] == b"384"
            and r.key == decode_output(r.value)["id"].encode()
        )
    for d in docs:
        out = outputs[d["id"]]
        assert (out["op"], out["dim"], out["dtype"], out["schema_version"]) == (
            "upsert",
            384,
            "float32",
            2,
        )
        assert out["content_hash"] == content_hash(d["text"])
        assert out["metadata"] == d["metadata"]
        assert (
            out["source"]["topic"] == lane.input
            and out["produced_at"] > 0
            and out["embedded_at"] >= out["produced_at"]
        )

    ours = np.stack([outputs[d["id"]]["vector"] for d in docs])
    reference = reference_model.encode([d["text"] for d in docs], batch_size=32)
    sims = cosine(ours, reference)
    assert sims.min() >= 0.999, f"lowest cosine {sims.min():.5f}"

    # committed offsets equal the end offsets the publisher got back
    committed = lane.committed()
    assert {p: committed[p] for p in report.end_offsets} == report.end_offsets

    # a restarted worker in the same group finds nothing left to do
    again = lane.run_worker()
    assert again["received"] == 0
    assert len(lane.outputs()) == len(docs)


def test_identical_documents_are_deduplicated_and_changed_ones_are_not(lane):
    docs = sample_corpus(60)
    lane.publish(docs)
    assert lane.run_worker()["embedded"] == 60

    changed = {d["id"] for d in docs[:10]}
    republished = [
        {**d, "text": d["text"] + " (revised)"} if d["id"] in changed else d for d in docs
    ]
    lane.publish(republished)
    summary = lane.run_worker()
    assert (summary["embedded"], summary["dedup_hits"]) == (10, 50)

    counts = Counter(decode_output(r.value)["id"] for r in lane.outputs(expect=70))
    assert {i for i, c in counts.items() if c == 2} == changed
    assert sum(counts.values()) == 70


def test_without_redis_nothing_is_deduplicated(lane):
    docs = sample_corpus(20)
    lane.publish(docs)
    lane.publish(docs)
    summary = lane.run_worker(EMBED_REDIS__DEDUP="false")
    assert (summary["embedded"], summary["dedup_hits"]) == (40, 0)


def test_deletes_publish_delete_events_and_clear_dedup(lane):
    docs = sample_corpus(30)
    lane.publish(docs)
    lane.run_worker()
    gone = [d["id"] for d in docs[:5]]
    lane.publish([{"id": i, "op": "delete"} for i in gone])
    summary = lane.run_worker(EMBED_OUTPUT__TOMBSTONES="true")
    assert (summary["deletes"], summary["embedded"]) == (5, 0)

    records = lane.outputs(expect=30 + 10)
    tombstones = [r.key.decode() for r in records if r.value is None]
    deletes = [
        decode_output(r.value)
        for r in records
        if r.value is not None and decode_output(r.value)["op"] == "delete"
    ]
    assert sorted(tombstones) == sorted(gone) == sorted(d["id"] for d in deletes)
    for r in records:  # each delete event comes before its tombstone in the partition
        if r.value is None:
            prior = [
                x
                for x in records
                if x.key == r.key and x.partition == r.partition and x.offset < r.offset
            ]
            assert decode_output(prior[-1].value)["op"] == "delete"

    # the delete cleared the dedup mark: the same text comes back as a fresh vector
    lane.publish(docs[:5])
    assert lane.run_worker()["embedded"] == 5


def test_bad_messages_go_to_the_dead_letter_topic_with_their_reason(lane):
    bad = [
        (b"u1", b"\xc1\xc1 not msgpack", "undecodable"),
        (b"u2", msgpack.packb(["a", "list"]), "not_a_map"),
        (b"u3", msgpack.packb({"text": "no id"}), "missing_field"),
        (b"u4", msgpack.packb({"id": "u4"}), "missing_field"),
        (b"u5", msgpack.packb({"id": "u5", "text": 12}), "wrong_type"),
        (b"u6", msgpack.packb({"id": "u6", "text": "   "}), "empty_text"),
        (b"u7", msgpack.packb({"id": "u7", "text": "x", "op": "merge"}), "unknown_op"),
        (b"u8", msgpack.packb({"id": "not-u8", "text": "x"}), "key_mismatch"),
        (b"u9", b"\xa2\xff\xfe", "undecodable"),
    ]
    good = sample_corpus(20)
    lane.publish(good[:10])
    lane.publish_raw([(k, v) for k, v, _ in bad])
    report = lane.publish(good[10:])
    summary = lane.run_worker()
    assert summary["embedded"] == 20 and summary["dead_lettered"] == len(bad)

    letters = {r.key: r for r in lane.dead_letters(expect=len(bad))}
    assert len(letters) == len(bad)
    for key, value, reason in bad:
        r = letters[key]
        headers = dict(r.headers)
        assert r.value == value
        assert headers["embed-dlq-reason"].decode() == reason
        assert headers["embed-source-topic"].decode() == lane.input
        assert int(headers["embed-source-offset"]) >= 0
    assert {decode_output(r.value)["id"] for r in lane.outputs(expect=20)} == {
        d["id"] for d in good
    }
    committed = lane.committed()
    assert all(committed[p] == end for p, end in report.end_offsets.items())


def test_sigterm_stops_cleanly_and_loses_nothing(lane):
    # the 200 longest documents of the corpus and 800 others: some 10 s of the real model here, so
    # the signal, sent at the first vector out, lands mid-run however quickly the worker starts
    docs = mixed_docs(1000)
    report = lane.publish(docs)
    proc = lane.start_worker()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not lane.any_output():
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr[-2000:]
    assert "run summary" in stderr

    # everything below each committed offset has its vector
    committed = lane.committed()
    outputs = [decode_output(r.value) for r in lane.outputs()]
    done = {(o["source"]["partition"], o["source"]["offset"]) for o in outputs}
    for p, off in committed.items():
        assert all((p, o) in done for o in range(off or 0))
    assert len(outputs) < len(docs), "the worker should have been stopped mid-run"

    # a second worker finishes the rest; every document has a vector
    lane.run_worker()
    final = {decode_output(r.value)["id"] for r in lane.outputs()}
    assert final == {d["id"] for d in docs}
    assert lane.committed() == {p: report.end_offsets.get(p) for p in lane.committed()}


def test_bad_configuration_fails_at_start_with_one_line(lane):
    proc = subprocess.run(
        [sys.executable, "-m", "worker", "run"],
        env=lane.env(EMBED_BATCH__MAX_WAIT_MS="-5"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "EMBED_BATCH__MAX_WAIT_MS" in proc.stderr


def test_an_unreachable_broker_is_one_clear_line(lane):
    proc = subprocess.run(
        [sys.executable, "-m", "worker", "run"],
        env=lane.env(EMBED_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:1"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("embed-worker: error: no Kafka broker reachable at 127.0.0.1:1")


@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
def test_two_processes_share_the_partitions_and_lose_nothing(lane, strategy):
    docs = sample_corpus(300)
    report = lane.publish(docs)
    summary = lane.run_worker(
        EMBED_PROCESSES="2", EMBED_KAFKA__ASSIGNMENT_STRATEGY=strategy, idle_s=4
    )
    assert len(summary["processes"]) == 2
    assert summary["embedded"] == sum(p["embedded"] for p in summary["processes"])
    # a rebalance may hand a partition over after its vectors went out but before their commit:
    # the new owner re-reads them and finds them in Redis, so each is embedded or skipped, never lost
    assert summary["embedded"] + summary["dedup_hits"] >= len(docs)
    # at-least-once: work in flight when partitions move (kafka-python reports a revocation only
    # after it) is done again by the next owner, so a document may come out twice, never not at all
    outputs = [decode_output(r.value) for r in lane.outputs(expect=summary["embedded"])]
    assert len(outputs) == summary["embedded"]
    assert {o["id"] for o in outputs} == {d["id"] for d in docs}
    assert lane.committed() == {p: report.end_offsets.get(p) for p in lane.committed()}
