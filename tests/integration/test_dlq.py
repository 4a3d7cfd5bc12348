"""``embed-worker dlq summary`` and ``replay`` against the real broker, the real worker process and
the real model: the fuzz payloads' dead letters summarised by reason, and a model failure fixed
between dead-lettering and replay (the replay publishes once, skips a superseded version, and the
fixed worker embeds what had failed as the reference model does)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from loadgen.fuzz import ANY_REASON, Fuzzer
from tests.integration.conftest import PARTITIONS, REPO
from worker.publish.codec import decode_output

pytestmark = pytest.mark.integration

# Words whose token ids are 29,000 or more in the bundled model's vocabulary (BERT uncased).
RARE_WORDS = ("agile", "hysteria", "chevy", "bukit")
BROKEN_VOCAB = 29_000


@pytest.fixture(scope="module")
def broken_model(tmp_path_factory) -> Path:
    """The bundled all-MiniLM-L6-v2 with its word embeddings cut to the first 29,000 tokens: the
    model loads and starts, and fails in the forward pass (an index out of range) on any document
    holding a rarer token — a model failure that only some documents meet."""
    from safetensors.torch import load_file, save_file

    from worker.encode.transformer import resolve_model_path

    src = Path(resolve_model_path("sentence-transformers/all-MiniLM-L6-v2"))
    out = tmp_path_factory.mktemp("broken-model") / "model"
    shutil.copytree(src, out)
    weights = load_file(out / "model.safetensors")
    name = "embeddings.word_embeddings.weight"
    weights[name] = weights[name][:BROKEN_VOCAB].clone()
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((out / "config.json").read_text())
    config["vocab_size"] = BROKEN_VOCAB
    (out / "config.json").write_text(json.dumps(config))
    return out


def dlq(lane, *args: str, expect_rc: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "worker", "dlq", *args, "--timeout", "10"],
        env=lane.env(),
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )
    assert proc.returncode == expect_rc, (
        f"embed-worker dlq {args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    )
    return proc


def input_count(lane) -> int:
    from loadgen.readback import read_topic

    return len(read_topic(lane.kafka, lane.input, timeout_s=30))


def test_summary_counts_the_fuzz_payloads_dead_letters_by_reason(lane):
    payloads = list(Fuzzer(seed=11, huge_every=0).payloads(240))
    lane.publish_raw([(p.key, p.value) for p in payloads])
    lane.run_worker(idle_s=3)

    expected = Counter(
        p.expect for p in payloads if p.expect not in ("embed", "delete", "superseded")
    )
    letters = lane.dead_letters(expect=sum(expected.values()))
    assert len(letters) == sum(expected.values())

    summary = json.loads(dlq(lane, "summary", "--json", "--samples", "2").stdout)
    by_reason = {row["reason"]: row for row in summary["by_reason"]}
    assert summary["total"] == len(letters) and summary["not_replayable"] == 0
    # every payload whose reason is known beforehand is counted under it; the random ones (any
    # reason) make up exactly the rest
    assert all(by_reason[r]["count"] >= n for r, n in expected.items() if r != ANY_REASON)
    extra = sum(row["count"] for row in summary["by_reason"]) - sum(
        n for r, n in expected.items() if r != ANY_REASON
    )
    assert extra == expected[ANY_REASON]
    # sample ids are the keys of letters with that reason
    keys_by_reason: dict[str, set[str]] = {}
    for m in letters:
        reason = dict(m.headers)["embed-dlq-reason"].decode()
        keys_by_reason.setdefault(reason, set()).add(
            "(no key)" if m.key is None else m.key.decode("utf-8", "replace")
        )
    for r, row in by_reason.items():
        assert 1 <= len(row["sample_ids"]) <= 2 and set(row["sample_ids"]) <= keys_by_reason[r]
    # by source partition: the input topic's partitions, adding up to the total
    assert {row["topic"] for row in summary["by_source"]} == {lane.input}
    assert {row["partition"] for row in summary["by_source"]} <= set(range(PARTITIONS))
    assert sum(row["count"] for row in summary["by_source"]) == len(letters)

    text = dlq(lane, "summary", "--reason", "missing_field").stdout
    assert f"{by_reason['missing_field']['count']:,} dead letters" in text
    assert "empty_text" not in text
    # a time range after every letter holds none
    assert "no dead letters" in dlq(lane, "summary", "--since", "2999-01-01").stdout

    # a dry run of an input-error replay shows what it would send, and sends nothing; a letter
    # without a key cannot be checked for a newer version, and stays
    before = input_count(lane)
    keyless = sum(
        1
        for m in letters
        if m.key is None and dict(m.headers)["embed-dlq-reason"] == b"missing_field"
    )
    plan = json.loads(
        dlq(lane, "replay", "--reason", "missing_field", "--dry-run", "--json").stdout
    )
    assert plan["unverifiable"] == keyless and plan["superseded"] == 0
    assert plan["to_send"] + keyless == by_reason["missing_field"]["count"] > keyless
    assert {x["reason"] for x in plan["letters"]} == {"missing_field"}
    dry = dlq(lane, "replay", "--reason", "missing_field", "--dry-run").stdout
    assert dry.count("would send ") == plan["to_send"]
    assert input_count(lane) == before
    # no selector: refused with one line naming what to pass
    refused = dlq(lane, "replay", expect_rc=2)
    assert "--reason" in refused.stderr and "--all" in refused.stderr


def test_replay_after_a_model_failure_is_fixed(lane, broken_model, reference_model):
    ok = [
        {"id": f"ok-{i}", "text": f"document number {i} about streams and queues"}
        for i in range(20)
    ]
    failing = [
        {"id": f"bad-{i}", "text": f"the {w} case number {i} of the week"}
        for i, w in enumerate(RARE_WORDS * 3)
    ]
    lane.publish(ok + failing)
    newer = {"id": "bad-0", "text": "bad-0 rewritten without the rare word"}
    first = lane.run_worker(idle_s=3, EMBED_MODEL__NAME=str(broken_model))
    assert first["dead_lettered"] == len(failing)
    lane.publish([newer])  # a newer version of one failed document arrives before the replay
    lane.run_worker(idle_s=3, EMBED_MODEL__NAME=str(broken_model))

    summary = json.loads(dlq(lane, "summary", "--json").stdout)
    assert [(r["reason"], r["count"]) for r in summary["by_reason"]] == [
        ("encode_failed", len(failing))
    ]
    assert "embedding" in summary["by_reason"][0]["detail"]  # the lookup past the cut vocabulary

    before = input_count(lane)
    dry = json.loads(dlq(lane, "replay", "--reason", "encode_failed", "--dry-run", "--json").stdout)
    assert dry["to_send"] == len(failing) - 1 and dry["superseded"] == 1
    assert "bad-0" not in {x["id"] for x in dry["letters"]}  # superseded by its newer version
    assert input_count(lane) == before

    done = json.loads(dlq(lane, "replay", "--reason", "encode_failed", "--json").stdout)
    assert done["replayed"] == len(failing) - 1 and done["superseded"] == 1
    assert input_count(lane) == before + len(failing) - 1
    # each went back to the input partition it came from, naming its letter
    from loadgen.readback import read_topic

    sources = {x["place"]: int(x["source"].split("/")[1]) for x in dry["letters"]}
    replays = [
        m for m in read_topic(lane.kafka, lane.input) if dict(m.headers).get("embed-replay-of")
    ]
    assert {dict(m.headers)["embed-replay-of"].decode(): m.partition for m in replays} == sources
    # the same command again publishes nothing: every letter is recorded as replayed
    again = json.loads(dlq(lane, "replay", "--reason", "encode_failed", "--json").stdout)
    assert again["replayed"] == 0 and again["already_replayed"] == len(failing) - 1
    assert input_count(lane) == before + len(failing) - 1
    after = json.loads(dlq(lane, "summary", "--json").stdout)
    assert after["total"] == len(failing) and after["replayed"] == len(failing) - 1

    # the model fixed: the worker (same group) embeds what had failed, as the reference does
    fixed = lane.run_worker(idle_s=3)
    assert fixed["dead_lettered"] == 0
    outputs = [decode_output(m.value) for m in lane.outputs()]
    upserts = {}
    for body in outputs:
        upserts.setdefault(body["id"], []).append(body)
    assert set(upserts) == {d["id"] for d in ok + failing}
    assert len(upserts["bad-0"]) == 1  # its newer version, once; the old one was not replayed
    texts = {d["id"]: d["text"] for d in ok + failing[1:]} | {"bad-0": newer["text"]}
    ids = sorted(texts)
    ref = reference_model.encode([texts[i] for i in ids], normalize_embeddings=True)
    got = np.stack([upserts[i][-1]["vector"] for i in ids])
    assert float(np.min(np.sum(ref * got, axis=1))) > 0.999
    assert all(len(upserts[d["id"]]) == 1 for d in failing[1:])
