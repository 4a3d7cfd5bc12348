"""Event-driven index updates end to end: the real worker chunks and embeds documents as they are
created, changed and deleted; the real sink applies its output to the index, in each store
(LanceDB, and a real PostgreSQL with pgvector); the real query command finds a document from a
paraphrase. Chunk boundaries and vectors are computed here independently, from the model's own
tokenizer."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time

import msgpack
import numpy as np
import pytest

from loadgen.corpus import sample_corpus
from loadgen.readback import read_topic
from tests.integration.conftest import REPO
from worker.config import ModelSettings, SinkSettings
from worker.consume.decode import encode_document
from worker.encode import load_encoder
from worker.sink.index import Index, open_index

pytestmark = pytest.mark.integration

CHUNK, OVERLAP = 48, 8
TEXTS = {
    "tides": "Ocean tides are the regular rise and fall of the sea surface. They are caused mainly by the gravitational pull of "
    "the Moon and, to a lesser degree, the Sun acting on the rotating Earth. Most coasts see two high tides and two low tides "
    "every lunar day. Spring tides, with the largest range, happen when the Sun and Moon line up at new and full moon; neap "
    "tides, with the smallest range, come at the quarter moons.",
    "bread": "Sourdough bread is leavened by a starter: a culture of wild yeast and lactic acid bacteria kept alive with flour and "
    "water. The baker mixes the starter into the dough, lets it ferment slowly for many hours, shapes the loaf and bakes it in a "
    "very hot oven, often inside a covered pot so the steam gives a crisp crust.",
    "volcano": "A volcano is an opening in the crust of a planet through which molten rock, ash and gases escape. Magma rises "
    "because it is lighter than the solid rock around it, gathers in a chamber, and erupts when the pressure grows too high. "
    "Explosive eruptions throw ash high into the atmosphere, while effusive eruptions pour out rivers of lava.",
    "chess": "In chess, the opening is the first phase of the game, when players develop their knights and bishops, fight for the "
    "centre and bring the king to safety by castling. Well-known openings include the Sicilian Defence, the Queen's Gambit and "
    "the Ruy Lopez, each with a long theory of main lines and variations.",
    "photosynthesis": "Photosynthesis is the process by which green plants, algae and some bacteria turn light energy into "
    "chemical energy. In the chloroplasts, chlorophyll absorbs sunlight, water is split and oxygen released, and carbon dioxide "
    "from the air is fixed into sugars that feed the plant.",
    "bicycle": "Keeping a bicycle in good order takes little time: pump the tyres to the pressure printed on their side, clean and "
    "oil the chain so it runs quietly, check that the brake pads are not worn down, and make sure the wheels spin true and the "
    "bolts are tight before a long ride.",
    "jazz": "Jazz grew up in New Orleans in the early twentieth century out of blues, ragtime and brass-band music. Its musicians "
    "valued improvisation, swing and call-and-response, and the style spread through Chicago and New York into big-band swing, "
    "bebop, cool jazz and fusion.",
    "taxes": "Filing an income tax return means reporting to the tax authority what you earned during the year, subtracting the "
    "deductions and allowances you are entitled to, working out the tax owed, and paying any balance or claiming a refund of "
    "what was withheld from your salary too much.",
}
PARAPHRASE = ("Why does the level of the sea go up and down twice a day?", "tides")
_tables = itertools.count()


@pytest.fixture(params=["lancedb", "postgres"])
def store(request, tmp_path) -> dict[str, str]:
    """The sink's settings for one index of its own in each store."""
    if request.param == "lancedb":
        return {"EMBED_SINK__PATH": str(tmp_path / "index")}
    url = request.getfixturevalue("postgres_url")
    return {
        "EMBED_SINK__STORE": "postgres",
        "EMBED_SINK__POSTGRES_URL": url,
        "EMBED_SINK__TABLE": f"documents_{os.getpid()}_{next(_tables)}",
    }


def open_store(env: dict[str, str]):
    """The index the sink with settings ``env`` writes, opened as ``embed-worker query`` opens it."""
    fields = {
        k.removeprefix("EMBED_SINK__").lower(): v
        for k, v in env.items()
        if k.startswith("EMBED_SINK__")
        and k != "EMBED_SINK__GROUP_ID"
        and k != "EMBED_SINK__MAX_POLL_RECORDS"
    }
    return open_index(SinkSettings(**fields), create=False)


def _round_two() -> list[tuple[str, str | None, str | None]]:
    """(id, text or None for a delete, per-message long_text): shrink, grow, unchanged, delete, policy change, two updates."""
    return [
        (
            "tides",
            TEXTS["tides"].split(". ")[0] + ". " + TEXTS["tides"].split(". ")[1] + ".",
            None,
        ),  # shrinks to fewer chunks
        (
            "bread",
            TEXTS["bread"] + " " + TEXTS["bread"].replace("Sourdough", "Rye sourdough"),
            None,
        ),  # grows
        ("volcano", TEXTS["volcano"], None),  # unchanged: skipped by dedup, its points stay
        ("chess", None, None),  # deleted
        (
            "photosynthesis",
            TEXTS["photosynthesis"],
            "truncate",
        ),  # chunks → one whole-document point
        ("jazz", TEXTS["jazz"] + " Louis Armstrong was its first great soloist.", None),
        (
            "jazz",
            TEXTS["jazz"] + " Duke Ellington led one of its great orchestras.",
            None,
        ),  # only this version stays
    ]


def _publish(lane, items) -> None:
    lane.publish_raw(
        [
            (
                i.encode(),
                encode_document(
                    i,
                    t,
                    op="delete" if t is None else "upsert",
                    metadata={"title": i},
                    long_text=lt,
                ),
            )
            for i, t, lt in items
        ]
    )


def _expected_chunks(tokenizer, text: str) -> list[list[int]]:
    """Rows of a chunked text, computed here: windows of CHUNK tokens overlapping by OVERLAP, [CLS] … [SEP]."""
    body = tokenizer(text, add_special_tokens=False)["input_ids"]
    starts = [0] if len(body) <= CHUNK else list(range(0, len(body) - OVERLAP, CHUNK - OVERLAP))
    starts = [s for s in starts if s == 0 or s + OVERLAP < len(body)]
    return [[tokenizer.cls_token_id, *body[s : s + CHUNK], tokenizer.sep_token_id] for s in starts]


def test_the_index_follows_creates_changes_and_deletes_and_answers_a_paraphrase(lane, store):
    index_env = {**store, "EMBED_SINK__GROUP_ID": f"{lane.group}-sink"}
    worker_env = {
        "EMBED_LONG_TEXT__POLICY": "chunk",
        "EMBED_LONG_TEXT__CHUNK_TOKENS": str(CHUNK),
        "EMBED_LONG_TEXT__CHUNK_OVERLAP": str(OVERLAP),
        "EMBED_OUTPUT__TOMBSTONES": "true",  # the sink also meets null-value tombstones after delete events
    }

    _publish(lane, [(i, t, None) for i, t in TEXTS.items()])
    first = lane.run_worker(**worker_env)
    lane.run_cli("sink", "--exit-when-idle", "2", **index_env)
    _publish(lane, _round_two())
    second = lane.run_worker(**worker_env)
    lane.run_cli("sink", "--exit-when-idle", "2", **index_env)
    assert second["dedup_hits"] == 1 and first["dead_lettered"] == second["dead_lettered"] == 0
    assert (
        sum(r.value is None for r in lane.outputs()) == 1
    )  # the delete's tombstone went through the sink

    latest: dict[str, tuple[int, dict]] = {}  # id → (offset, message) of its last input message
    for r in sorted(lane_inputs(lane), key=lambda r: r.offset):
        body = msgpack.unpackb(r.value)
        latest[body["id"]] = (r.offset, body)
    encoder = load_encoder(ModelSettings())
    tokenizer = encoder._text._tokenizer
    rows = open_store(index_env).rows()
    by_doc: dict[str, list[dict]] = {}
    for r in rows:
        by_doc.setdefault(r["parent_id"], []).append(r)

    live = {i for i, (_, body) in latest.items() if body["op"] == "upsert"}
    assert set(by_doc) == live and "chess" not in by_doc  # the deleted document is gone
    for doc_id in live:
        offset, body = latest[doc_id]
        points = sorted(by_doc[doc_id], key=lambda r: -1 if r["chunk"] is None else r["chunk"])
        if doc_id == "volcano":  # unchanged in round two: still the first version, untouched
            offset = min(
                r.offset for r in lane_inputs(lane) if msgpack.unpackb(r.value)["id"] == "volcano"
            )
        assert {r["version"] for r in points} == {offset}, doc_id  # one version: the latest text's
        if body.get("long_text") == "truncate":
            expected = [encoder.tokenize([body["text"]])[0]]
            assert [(r["id"], r["chunk"], r["chunks"]) for r in points] == [(doc_id, None, 1)]
        else:
            expected = _expected_chunks(tokenizer, body["text"])
            assert [(r["id"], r["chunk"], r["chunks"]) for r in points] == [
                (f"{doc_id}#{n}", n, len(expected)) for n in range(len(expected))
            ]
        want = encoder.encode(expected)
        got = np.stack([r["vector"] for r in points])
        cos = (want * got).sum(1) / (np.linalg.norm(want, axis=1) * np.linalg.norm(got, axis=1))
        assert cos.min() > 0.9999, (doc_id, cos)
        assert json.loads(points[0]["metadata"]) == {"title": doc_id}
    assert len(by_doc["tides"]) < len(
        _expected_chunks(tokenizer, TEXTS["tides"])
    )  # shrunk-away chunks are gone
    assert len(by_doc["bread"]) > len(_expected_chunks(tokenizer, TEXTS["bread"]))

    query, target = PARAPHRASE
    hits = json.loads(lane.run_cli("query", query, "-k", "3", "--json", **index_env))
    assert hits[0]["document"] == target and hits[0]["score"] > hits[1]["score"], hits
    assert len({h["document"] for h in hits}) == 3

    # A replay from the start (a fresh sink group over the same index) leaves the index as it was.
    before = sorted((r["key"], r["version"]) for r in rows)
    lane.run_cli(
        "sink",
        "--exit-when-idle",
        "2",
        **{**index_env, "EMBED_SINK__GROUP_ID": f"{lane.group}-replay"},
    )
    after = open_store(index_env).rows()
    assert sorted((r["key"], r["version"]) for r in after) == before


def lane_inputs(lane):
    return read_topic(lane.kafka, lane.input, timeout_s=30)


def test_a_sink_killed_mid_stream_loses_nothing_and_doubles_nothing(lane, store):
    """kill -9 between writes and commits: the restarted sink replays from its last commit and
    the index ends with every point once."""
    docs = sample_corpus(400)
    _publish(lane, [(d["id"], d["text"], None) for d in docs])
    lane.run_worker(EMBED_LONG_TEXT__POLICY="chunk", EMBED_LONG_TEXT__CHUNK_TOKENS="64")
    vectors = [msgpack.unpackb(r.value) for r in lane.outputs()]
    expected = {(v["parent_id"], v["chunk"]) for v in vectors if v["op"] == "upsert"}
    assert len(expected) > len(docs)  # some documents are in several chunks

    env = {
        **store,
        "EMBED_SINK__GROUP_ID": f"{lane.group}-sink",
        "EMBED_SINK__MAX_POLL_RECORDS": "40",
    }
    sink = subprocess.Popen(
        [sys.executable, "-m", "worker", "sink"],
        env=lane.env(**env),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if 0 < open_store(env).count() < len(expected):
                    break
            except Exception:  # not created yet
                pass
            time.sleep(0.05)
        else:
            pytest.fail("the sink wrote nothing in 120 s")
        sink.send_signal(signal.SIGKILL)
        sink.wait(timeout=30)
    finally:
        if sink.poll() is None:
            sink.kill()
    partial = open_store(env).count()
    assert 0 < partial < len(expected)

    lane.run_cli("sink", "--exit-when-idle", "2", **env)
    rows = open_store(env).rows()
    assert len(rows) == len(expected) == len({r["key"] for r in rows})
    assert {(r["parent_id"], r["chunk"]) for r in rows} == expected


def test_a_sink_fed_vectors_of_another_model_keeps_running_and_counts_them(lane, tmp_path):
    """A model rollout that reused the topic: the real sink leaves the new model's vectors out,
    counts them, and goes on applying the old model's and every delete."""
    from worker.consume.decode import decode_record
    from worker.encode.base import ModelInfo
    from worker.publish import codec
    from worker.transport import transport

    old, new = (
        ModelInfo("old-model", 4, "float32", "cpu", "mean", True, 16),
        ModelInfo("new-model", 6, "float32", "cpu", "mean", True, 16),
    )
    messages = []
    for offset, (doc_id, info) in enumerate(
        [("a", old), ("b", old), ("a", new), ("c", new), ("b", None)]
    ):
        doc = decode_record(
            "in",
            0,
            offset,
            0,
            doc_id.encode(),
            encode_document(doc_id, "text", op="delete" if info is None else "upsert"),
        )
        if info is None:
            messages += codec.delete_messages(doc, old, 0, tombstone=False)
        else:
            messages.append(
                codec.vector_message(doc, np.ones(info.dim, np.float32), info, "float32", 0)
            )
    producer = transport(lane.kafka).producer(lane.kafka)
    try:
        for m in messages:
            producer.send(lane.output, m.key, m.value, lambda *_: None)
        producer.flush(30)
    finally:
        producer.close()
    summary_file, path = tmp_path / "sink.json", str(tmp_path / "index")
    lane.run_cli(
        "sink",
        "--exit-when-idle",
        "2",
        "--summary-file",
        str(summary_file),
        EMBED_SINK__PATH=path,
        EMBED_SINK__GROUP_ID=f"{lane.group}-sink",
    )
    summary = json.loads(summary_file.read_text())
    assert summary["other_model"] == 2 and summary["messages"] == 5
    rows = Index(path, "documents", create=False).rows()
    assert [(r["id"], r["model"]) for r in rows] == [
        ("a", "old-model")
    ]  # b deleted; the new model's a and c left out
