"""The long-text policy: windows, what each policy makes of a long text, and chunked documents
through the main loop (dummy encoder, in-memory Kafka), published together and in order."""

import itertools
import random

import numpy as np
import pytest

from tests.unit.test_runner import FakeConsumer, FakeDedup, FakeProducer, Record, records, run
from worker.config import BatchSettings, KafkaSettings, LongTextSettings, Settings
from worker.consume.decode import Reason, decode_record, encode_document
from worker.encode.base import DummyEncoder
from worker.encode.chunking import TextLimits, prepare, windows
from worker.errors import ConfigError, MessageTooLargeError
from worker.publish.codec import OutMessage, decode_output, wire_size
from worker.runner import Worker


def test_windows_cover_every_token_in_overlapping_spans_no_longer_than_the_chunk():
    rng = random.Random(7)
    for _ in range(500):
        size = rng.randint(1, 40)
        overlap = rng.randint(0, size - 1)
        n = rng.randint(1, 400)
        spans = windows(n, size, overlap)
        covered = set()
        for start, end in spans:
            assert 0 < end - start <= size
            covered.update(range(start, end))
        assert covered == set(range(n))
        assert spans[0][0] == 0 and spans[-1][1] == n
        for (s1, e1), (s2, _) in itertools.pairwise(spans):
            assert s2 - s1 == size - overlap and e1 - s2 == overlap


def test_windows_worked_example():
    assert windows(10, 4, 1) == [(0, 4), (3, 7), (6, 10)]
    assert windows(4, 4, 1) == [(0, 4)]


def test_a_chunk_larger_than_the_model_window_fails_at_start_up_naming_the_setting():
    with pytest.raises(ConfigError, match="EMBED_LONG_TEXT__CHUNK_TOKENS"):
        TextLimits.build(LongTextSettings(chunk_tokens=300), max_length=256, specials=2)
    assert TextLimits.build(LongTextSettings(), 256, 2).chunk_tokens == 254


def _doc(text, long_text=None, offset=0):
    return decode_record("in", 0, offset, 0, b"d", encode_document("d", text, long_text=long_text))


def test_each_policy_on_a_text_longer_than_the_window():
    enc = DummyEncoder(max_length=8)
    limits = TextLimits.build(LongTextSettings(chunk_tokens=4, chunk_overlap=1, max_chunks=3), 8, 0)
    words = [f"w{i}" for i in range(10)]
    body = enc.body([" ".join(words)])[0]
    docs = [_doc(" ".join(words), p) for p in ("truncate", "truncate_left", "reject", "chunk")]
    rows = prepare(enc, docs, limits)
    head, tail, rejected, *chunks = rows
    assert head.token_ids == body[:8] and tail.token_ids == body[-8:]
    assert rejected.rejected[0] == Reason.TEXT_TOO_LONG and rejected.token_ids is None
    assert [r.token_ids for r in chunks] == [body[0:4], body[3:7], body[6:10]]
    assert {id(r.group) for r in chunks} == {id(chunks[0].group)} and chunks[0].group.doc is docs[3]
    assert [r.chunk for r in chunks] == [0, 1, 2] and all(
        r.id == "d" and r.source == docs[3].source for r in chunks
    )


def test_a_text_that_fits_is_untouched_by_every_policy_and_too_many_chunks_is_rejected():
    enc = DummyEncoder(max_length=8)
    limits = TextLimits.build(LongTextSettings(chunk_tokens=4, chunk_overlap=1, max_chunks=2), 8, 0)
    short = [_doc("a b c", p) for p in ("truncate_left", "reject")]
    assert [r.token_ids for r in prepare(enc, short, limits)] == [enc.body(["a b c"])[0]] * 2
    (one,) = prepare(enc, [_doc("a b c", "chunk")], limits)
    assert one.chunk == 0 and one.group.count == 1
    (many,) = prepare(enc, [_doc(" ".join(f"x{i}" for i in range(10)), "chunk")], limits)
    assert (
        many.rejected[0] == Reason.TEXT_TOO_LONG
        and "EMBED_LONG_TEXT__MAX_CHUNKS" in many.rejected[1]
    )


def test_an_unknown_long_text_value_is_a_dead_letter_reason():
    rej = decode_record("in", 0, 0, 0, b"d", encode_document("d", "x", long_text="summarize"))
    assert rej.reason == Reason.UNKNOWN_LONG_TEXT


def test_the_real_tokenizer_truncates_the_same_way_through_either_path():
    from worker.config import ModelSettings
    from worker.encode.transformer import TextTokenizer

    tok = TextTokenizer(ModelSettings())
    text = "The quick brown fox jumps over the lazy dog. " * 80
    body = tok.body([text])[0]
    window = tok.max_length - tok.specials
    assert len(body) > window and tok.specials == 2
    assert tok.tokenize([text])[0] == tok.wrap(body[:window])
    assert tok.wrap([7592]) == [101, 7592, 102]


def test_the_fast_path_tokenizes_exactly_as_transformers_does():
    from loadgen.corpus import sample_corpus
    from worker.config import ModelSettings
    from worker.encode.transformer import TextTokenizer

    tok = TextTokenizer(ModelSettings())
    texts = [d["text"] for d in sample_corpus(400)] + [
        "a",
        "é" * 5,
        "x" * 5000,
        "  padded  ",
        "日本語のテキスト 🙂",
    ]
    slow = tok._tokenizer(
        [t.strip()[: tok.max_length * 250] for t in texts],
        truncation=True,
        max_length=tok.max_length,
    )["input_ids"]
    assert tok.tokenize(texts) == slow


def _settings(**long_text):
    return Settings(
        kafka=KafkaSettings(commit_interval_ms=5),
        batch=BatchSettings(max_wait_ms=0, max_tokens=8),
        long_text=LongTextSettings(policy="chunk", chunk_tokens=4, chunk_overlap=1, **long_text),
    )


TEN = " ".join(f"w{i}" for i in range(10))


def test_chunks_come_out_together_with_their_document_fields_and_the_offset_is_committed_after():
    enc = DummyEncoder(max_length=8)
    _stats, outputs, intake, _ = run(
        [records(("a", TEN), ("b", "x y"))], settings=_settings(), encoder=enc
    )
    ups = sorted(
        (o for topic, o in outputs if topic == "embeddings"), key=lambda o: o["id"]
    )  # documents in any order
    assert [o["id"] for o in ups] == ["a#0", "a#1", "a#2", "b#0"]
    assert [(o["parent_id"], o["chunk"], o["chunks"], o["version"]) for o in ups[:3]] == [
        ("a", n, 3, 0) for n in range(3)
    ]
    assert (ups[3]["parent_id"], ups[3]["chunks"], ups[3]["version"]) == ("b", 1, 1)
    body = DummyEncoder().body([TEN])[0]
    expected = DummyEncoder(max_length=8).encode([body[0:4], body[3:7], body[6:10]])
    np.testing.assert_allclose(np.stack([o["vector"] for o in ups[:3]]), expected, rtol=1e-6)
    assert intake.commits[-1] == {("in", 0): 2}


def test_the_document_vector_is_the_normalized_mean_of_its_chunks():
    _, outputs, _, _ = run(
        [records(("a", TEN))],
        settings=_settings(document_vector=True),
        encoder=DummyEncoder(max_length=8),
    )
    ups = [o for topic, o in outputs if topic == "embeddings"]
    assert [o["id"] for o in ups] == ["a#0", "a#1", "a#2", "a"]
    whole = ups[3]
    assert whole["chunk"] is None and whole["chunks"] == 3 and whole["parent_id"] == "a"
    mean = np.mean([o["vector"] for o in ups[:3]], axis=0)
    np.testing.assert_allclose(whole["vector"], mean / np.linalg.norm(mean), rtol=1e-6)


class FailsOnToken(DummyEncoder):
    """The model fails on any row holding the token of ``bad``."""

    def __init__(self, bad):
        super().__init__(max_length=8)
        self.bad = self.body([bad])[0][0]

    def encode(self, token_ids):
        if any(self.bad in ids for ids in token_ids):
            raise RuntimeError("boom")
        return super().encode(token_ids)


def test_one_failed_chunk_dead_letters_the_whole_document_once_and_publishes_none_of_it():
    poll = records(("a", TEN), ("b", "x y"))
    _, outputs, intake, _ = run([poll], settings=_settings(), encoder=FailsOnToken("w8"))
    ups = [o["id"] for topic, o in outputs if topic == "embeddings"]
    dlq = [m for topic, m in outputs if topic == "documents.dlq"]
    assert ups == ["b#0"]
    assert (
        len(dlq) == 1
        and dlq[0].value == poll[0].value
        and dict(dlq[0].headers)["embed-dlq-reason"] == b"encode_failed"
    )
    assert intake.commits[-1] == {("in", 0): 2}


def test_versions_of_a_chunked_document_come_out_whole_and_in_order():
    poll = records(("a", TEN), ("a", "w1 w2 w3 w4 w5"), ("a", TEN + " w10"))
    poll.append(Record("in", 0, 3, 1000, b"a", encode_document("a", op="delete")))
    _, outputs, _, _ = run([poll], settings=_settings(), encoder=DummyEncoder(max_length=8))
    seen = [(o["op"], o["source"]["offset"], o.get("chunk")) for _, o in outputs]
    assert seen == [
        ("upsert", 0, 0),
        ("upsert", 0, 1),
        ("upsert", 0, 2),
        ("upsert", 1, 0),
        ("upsert", 1, 1),
    ] + [("upsert", 2, n) for n in range(4)] + [("delete", 3, None)]


def test_a_message_can_choose_its_own_policy():
    poll = [Record("in", 0, 0, 1000, b"a", encode_document("a", TEN, long_text="reject"))]
    poll.append(
        Record("in", 0, 1, 1000, b"b", encode_document("b", TEN, long_text="truncate_left"))
    )
    _, outputs, intake, _ = run([poll], encoder=DummyEncoder(max_length=8))
    dlq = [dict(m.headers)["embed-dlq-reason"] for topic, m in outputs if topic == "documents.dlq"]
    ups = [o for topic, o in outputs if topic == "embeddings"]
    assert dlq == [b"text_too_long"]
    assert [(o["id"], o["chunks"]) for o in ups] == [("b", 1)]
    assert intake.commits[-1] == {("in", 0): 2}


class LimitedProducer(FakeProducer):
    """Refuses, as the clients do, a message over ``limit`` bytes (key, value and headers)."""

    def __init__(self, limit):
        super().__init__()
        self.limit = limit

    def produce(self, topic, key, value, headers, on_delivery):
        if wire_size(OutMessage(key, value, headers)) > self.limit:
            raise MessageTooLargeError("Broker: Message size too large")
        super().produce(topic, key, value, headers, on_delivery)


def test_a_chunked_document_with_one_message_too_large_is_dead_lettered_with_none_of_it_sent():
    # chunks 0..9 went out before chunk 10 (an id one byte longer) was refused: the sink held a
    # partial version of the document
    forty = " ".join(f"w{i}" for i in range(40))  # 13 chunks: "a#10" and on are a byte longer
    probe = FakeProducer()
    Worker(
        _settings(),
        DummyEncoder(max_length=8),
        FakeConsumer([records(("a", forty))], events={0: [("assigned", {("in", 0)})]}),
        probe,
        FakeDedup(),
    ).run(exit_when_idle_s=0.02)
    sizes = {decode_output(m.value)["id"]: wire_size(m) for _, m in probe.sent}
    assert len(sizes) == 13 and sizes["a#10"] == sizes["a#9"] + 1
    limit = sizes["a#9"]
    settings = _settings().model_copy(
        update={"kafka": KafkaSettings(commit_interval_ms=5, max_message_bytes=limit)}
    )
    intake, publisher = (
        FakeConsumer(
            [records(("a", forty), ("b", "x y"))], events={0: [("assigned", {("in", 0)})]}
        ),
        LimitedProducer(limit),
    )
    stats = Worker(settings, DummyEncoder(max_length=8), intake, publisher, FakeDedup()).run(
        exit_when_idle_s=0.02
    )
    ups = [decode_output(m.value)["id"] for t, m in publisher.sent if t == "embeddings"]
    dead = [m for t, m in publisher.sent if t != "embeddings"]
    assert ups == ["b#0"]  # nothing of "a"
    assert len(dead) == 1 and dict(dead[0].headers)["embed-dlq-reason"] == b"output_too_large"
    assert b"message 11 of 13" in dict(dead[0].headers)["embed-dlq-detail"]
    assert stats.dead_lettered["output_too_large"] == 1 and intake.commits[-1] == {("in", 0): 2}
