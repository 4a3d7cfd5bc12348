"""Input formats with the real worker: JSON contract messages, and Debezium change events of a
table (snapshot, updates, deletes with their tombstones, a truncate) flowing through to vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from loadgen.cdc import TEMPLATE, DebeziumEncoder, with_tombstones
from loadgen.corpus import sample_corpus
from worker.publish.codec import decode_output

pytestmark = pytest.mark.integration


def articles(n: int) -> list[dict]:
    return [
        {**d, "metadata": {"title": f"Article {i}", "lang": "en"}}
        for i, d in enumerate(sample_corpus(n))
    ]


def test_debezium_change_events_become_upserts_and_deletes_and_a_truncate_a_dead_letter(
    lane, reference_model
):
    docs = articles(24)
    encode = DebeziumEncoder(schema=True)
    snapshot = [encode({**d, "debezium_op": "r"}) for d in docs]
    changed = [
        {**docs[i], "text": docs[i]["text"] + " (revised)", "debezium_op": "u"} for i in (0, 1, 2)
    ]
    deleted = [{"id": docs[i]["id"], "op": "delete"} for i in (3, 4)]
    later = [encode(d) for d in with_tombstones(changed + deleted)]
    truncate_key = None  # a truncate is table-wide: Debezium writes it without a key
    truncate = json.dumps(
        {
            "schema": {"type": "struct"},
            "payload": {
                "before": None,
                "after": None,
                "op": "t",
                "source": {"table": "articles"},
                "ts_ms": 1,
            },
        }
    ).encode()
    lane.publish_raw(snapshot + later + [(truncate_key, truncate)])

    summary = lane.run_worker(
        EMBED_INPUT__FORMAT="debezium",
        EMBED_INPUT__TEXT_TEMPLATE=TEMPLATE,
        EMBED_INPUT__METADATA_FIELDS="lang",
    )
    assert (summary["embedded"], summary["deletes"], summary["dead_lettered"]) == (24 + 3, 2 + 2, 1)

    outputs = [
        decode_output(r.value) for r in lane.outputs(expect=24 + 3 + 4) if r.value is not None
    ]
    upserts = {}
    for o in outputs:  # the last upsert of an id wins, as a sink applies them
        if o["op"] == "upsert":
            upserts[o["id"]] = o
    assert sorted(o["id"] for o in outputs if o["op"] == "delete") == sorted(
        [d["id"] for d in deleted] * 2
    )
    assert set(upserts) == {d["id"] for d in docs}
    assert all(o["metadata"] == {"lang": "en"} for o in upserts.values())

    # the vector is the model's for the template's text: "{title}\n\n{body}"
    revised = changed[0]
    text = f"{revised['metadata']['title']}\n\n{revised['text']}"
    got = np.frombuffer(upserts[revised["id"]]["vector"], dtype="<f4")
    want = reference_model.encode([text], normalize_embeddings=True)[0]
    assert float(got @ want / np.linalg.norm(got) / np.linalg.norm(want)) > 0.999

    (letter,) = lane.dead_letters(expect=1)
    assert dict(letter.headers)["embed-dlq-reason"] == b"truncate" and letter.value == truncate
    assert (
        sum(v for v in lane.committed().values() if v) == len(snapshot) + len(later) + 1
    )  # everything committed


def test_json_contract_messages_are_embedded_like_msgpack_ones_and_bad_json_is_dead_lettered(lane):
    docs = sample_corpus(20)
    good = [
        (
            d["id"].encode(),
            json.dumps({"id": d["id"], "text": d["text"], "metadata": {"n": i}}).encode(),
        )
        for i, d in enumerate(docs)
    ]
    bad = [
        (b"j1", b'{"id": "j1", "text": '),
        (b"j2", b'["not", "an", "object"]'),
        (b"j3", json.dumps({"id": "j3", "text": 5}).encode()),
    ]
    lane.publish_raw(good[:10] + bad + good[10:])
    summary = lane.run_worker(EMBED_INPUT__FORMAT="json")
    assert (summary["embedded"], summary["dead_lettered"]) == (20, 3)
    out = {decode_output(r.value)["id"]: decode_output(r.value) for r in lane.outputs(expect=20)}
    assert set(out) == {d["id"] for d in docs} and out[docs[7]["id"]]["metadata"] == {"n": 7}
    reasons = {
        r.key: dict(r.headers)["embed-dlq-reason"].decode() for r in lane.dead_letters(expect=3)
    }
    assert reasons == {b"j1": "undecodable", b"j2": "not_a_map", b"j3": "wrong_type"}
