import msgpack
import pytest

from worker.consume.decode import (
    MAX_ID_BYTES,
    MAX_METADATA_DEPTH,
    Document,
    Reason,
    Rejection,
    content_hash,
    decode_record,
    decode_records,
    encode_document,
)


def decode(value, key=b"doc-1"):
    return decode_record("in", 2, 41, 1_700_000_000_000, key, value)


def test_a_valid_upsert_decodes_with_its_source_and_hash():
    d = decode(encode_document("doc-1", "hello world", metadata={"lang": "en", "n": [1, 2]}))
    assert isinstance(d, Document)
    assert (d.id, d.text, d.op, d.metadata) == (
        "doc-1",
        "hello world",
        "upsert",
        {"lang": "en", "n": [1, 2]},
    )
    assert (d.source.topic, d.source.partition, d.source.offset, d.source.timestamp_ms) == (
        "in",
        2,
        41,
        1_700_000_000_000,
    )
    assert d.content_hash == content_hash("hello world") != content_hash("hello world!")


def test_a_delete_needs_no_text():
    d = decode(encode_document("doc-1", op="delete"))
    assert isinstance(d, Document) and d.op == "delete"


def test_a_null_key_is_dead_lettered_unless_allowed():
    # keyless versions of one id scatter over partitions: their order, and the sink's, is lost
    r = decode(encode_document("doc-1", "x"), key=None)
    assert (
        isinstance(r, Rejection)
        and r.reason == Reason.KEY_MISSING
        and "ALLOW_NULL_KEYS" in r.detail
    )
    docs, rejected = decode_records([("in", 0, 0, 0, None, encode_document("doc-1", "x"))])
    assert not docs and [x.reason for x in rejected] == [Reason.KEY_MISSING]
    assert isinstance(
        decode_record("in", 0, 0, 0, None, encode_document("doc-1", "x"), allow_null_keys=True),
        Document,
    )
    docs, rejected = decode_records(
        [("in", 0, 0, 0, None, encode_document("doc-1", "x"))], allow_null_keys=True
    )
    assert [d.id for d in docs] == ["doc-1"] and not rejected


def test_the_dedup_value_changes_with_the_metadata_and_only_then():
    plain = decode(encode_document("doc-1", "same text"))
    tagged = decode(encode_document("doc-1", "same text", metadata={"lang": "en"}))
    retagged = decode(encode_document("doc-1", "same text", metadata={"lang": "fr"}))
    again = decode(encode_document("doc-1", "same text", metadata={"lang": "fr"}))
    values = {plain.dedup_value, tagged.dedup_value, retagged.dedup_value}
    assert len(values) == 3 and retagged.dedup_value == again.dedup_value
    assert plain.dedup_value == content_hash(
        "same text"
    )  # no metadata: the marks written before stay valid
    assert (
        decode(encode_document("doc-1", "same text", metadata={})).dedup_value == plain.dedup_value
    )
    fast, _ = decode_records(
        [("in", 2, 41, 0, b"doc-1", encode_document("doc-1", "same text", metadata={"lang": "fr"}))]
    )
    nested, _ = decode_records(
        [
            (
                "in",
                2,
                41,
                0,
                b"doc-1",
                encode_document("doc-1", "same text", metadata={"lang": {"x": "fr"}}),
            )
        ]
    )
    assert (
        fast[0].dedup_value == retagged.dedup_value != nested[0].dedup_value
    )  # both decode paths agree


@pytest.mark.parametrize(
    "value, reason",
    [
        (b"\xc1\xff not msgpack", Reason.UNDECODABLE),
        (None, Reason.UNDECODABLE),
        (msgpack.packb([1, 2, 3]), Reason.NOT_A_MAP),
        (msgpack.packb({"text": "no id"}), Reason.MISSING_FIELD),
        (msgpack.packb({"id": 7, "text": "x"}), Reason.WRONG_TYPE),
        (msgpack.packb({"id": "doc-1"}), Reason.MISSING_FIELD),
        (msgpack.packb({"id": "doc-1", "text": 3.5}), Reason.WRONG_TYPE),
        (msgpack.packb({"id": "doc-1", "text": "  \n\t "}), Reason.EMPTY_TEXT),
        (msgpack.packb({"id": "doc-1", "text": "x", "op": "upsert-all"}), Reason.UNKNOWN_OP),
        (msgpack.packb({"id": "doc-1", "text": "x", "metadata": [1]}), Reason.WRONG_TYPE),
        (msgpack.packb({"id": "other", "text": "x"}), Reason.KEY_MISMATCH),
        (b"\xa3\xff\xfe\xfd", Reason.UNDECODABLE),  # a msgpack str of invalid UTF-8
    ],
)
def test_bad_messages_are_rejected_with_their_reason_and_original_bytes(value, reason):
    r = decode(value)
    assert isinstance(r, Rejection)
    assert r.reason == reason and r.detail
    assert r.value == value and r.key == b"doc-1"
    assert (r.source.partition, r.source.offset) == (2, 41)


def _nested(levels: int) -> dict:
    meta: dict = {"leaf": 1}
    for _ in range(levels - 1):
        meta = {"m": meta}
    return meta


def test_metadata_nested_up_to_the_limit_passes_and_deeper_is_rejected():
    ok = decode(encode_document("doc-1", "x", metadata=_nested(MAX_METADATA_DEPTH)))
    assert isinstance(ok, Document)
    deep = decode(encode_document("doc-1", "x", metadata=_nested(MAX_METADATA_DEPTH + 1)))
    assert isinstance(deep, Rejection) and deep.reason == Reason.METADATA_TOO_DEEP
    lists = decode(encode_document("doc-1", "x", metadata={"a": [[[[1]]]] * 3}))
    assert isinstance(lists, Document)


def test_an_id_longer_than_the_limit_is_rejected_even_when_the_key_matches():
    at_limit = "é" * (MAX_ID_BYTES // 2)  # 2 bytes each: exactly the limit
    assert isinstance(decode(encode_document(at_limit, "x"), key=at_limit.encode()), Document)
    over = at_limit + "a"
    r = decode(encode_document(over, "x"), key=over.encode())
    assert (
        isinstance(r, Rejection)
        and r.reason == Reason.ID_TOO_LONG
        and str(MAX_ID_BYTES) in r.detail
    )


@pytest.mark.parametrize(
    "text", ["吾輩は猫である", "🙂🚀 👩‍👩‍👧‍👦", "nul\x00inside\x00", "في البدء كانت الكلمة"]
)
def test_non_latin_emoji_and_nul_text_decodes_unchanged(text):
    d = decode(encode_document("doc-1", text))
    assert isinstance(d, Document) and d.text == text and d.content_hash == content_hash(text)


def test_the_batch_decoder_accepts_and_rejects_exactly_what_the_detailed_decoder_does():
    import msgpack

    from worker.consume.decode import Rejection, decode_record, decode_records

    values = [
        encode_document("a", "hello", metadata={"k": 1}),
        encode_document("a", op="delete"),
        encode_document("a", ""),
        encode_document("a", "  "),
        msgpack.packb({"id": 5, "text": "x"}),
        b"\xc1",
        msgpack.packb([1]),
        msgpack.packb({"text": "x"}),
        encode_document("a", "x", metadata={"k": {"n": [1]}}),
        encode_document("a", "x", long_text="bogus"),
        encode_document("a", "x", long_text="chunk"),
        encode_document("é" * 200, "x"),
        encode_document("é" * 300, "x"),
        msgpack.packb({"id": "a", "text": "x", "op": "nope"}),
        msgpack.packb({"id": "a", "text": 5}),
        msgpack.packb({"id": "a", "text": "x", "metadata": [1]}),
        None,
        msgpack.packb({"id": "a", "text": "x", "metadata": {1: 2}}),
        b"\x82\xa2id\xa1a\xa4text\xa3a\xc3(",  # invalid UTF-8
        encode_document("a", "x", metadata=_nested(MAX_METADATA_DEPTH + 1)),
        encode_document(
            "a",
            "x",
            metadata={
                "b": b"\x00raw",
                "f": 1.5,
                "t": True,
                "n": None,
                "i": -3,
                "u": 2**64 - 1,
                "s": "é",
            },
        ),
        encode_document("a", "x", metadata={"list": [1, "two"], "k": "v"}),
        encode_document("a", "x", metadata={}),
    ]
    for key in (None, b"a", b"b"):
        records = [("t", 0, i, 1, key, v) for i, v in enumerate(values)]
        docs, rejected = decode_records(records)
        fast = {
            d.source.offset: ("doc", d.id, d.op, d.dedup_value, d.metadata, d.long_text)
            for d in docs
        }
        fast.update({r.source.offset: (r.reason,) for r in rejected})
        for r in records:
            item = decode_record(*r)
            slow = (
                (item.reason,)
                if isinstance(item, Rejection)
                else ("doc", item.id, item.op, item.dedup_value, item.metadata, item.long_text)
            )
            assert fast[r[2]] == slow, (key, r[2])


def test_metadata_of_any_msgpack_type_hashes_and_both_paths_agree():
    # a msgpack timestamp (ext -1, as msgspec or Go write a datetime) made the metadata hash raise,
    # ending the worker on that record at every restart
    import datetime

    import msgspec

    value = msgspec.msgpack.encode(
        {
            "id": "a",
            "text": "x",
            "metadata": {"at": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)},
        }
    )
    other = msgspec.msgpack.encode(
        {
            "id": "a",
            "text": "x",
            "metadata": {"at": datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC)},
        }
    )
    ext = msgpack.packb({"id": "a", "text": "x", "metadata": {"e": msgpack.ExtType(5, b"raw")}})
    docs, rejected = decode_records(
        [("in", 0, 0, 0, b"a", value), ("in", 0, 1, 0, b"a", other), ("in", 0, 2, 0, b"a", ext)]
    )
    assert not rejected and len({d.dedup_value for d in docs}) == 3
    assert [d.dedup_value for d in docs] == [
        decode_record("in", 0, i, 0, b"a", v).dedup_value for i, v in enumerate((value, other, ext))
    ]
