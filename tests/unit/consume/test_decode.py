import msgpack
import pytest

from worker.consume.decode import Document, Reason, Rejection, content_hash, decode_record, encode_document


def decode(value, key=b"doc-1"):
    return decode_record("in", 2, 41, 1_700_000_000_000, key, value)


def test_a_valid_upsert_decodes_with_its_source_and_hash():
    d = decode(encode_document("doc-1", "hello world", metadata={"lang": "en", "n": [1, 2]}))
    assert isinstance(d, Document)
    assert (d.id, d.text, d.op, d.metadata) == ("doc-1", "hello world", "upsert", {"lang": "en", "n": [1, 2]})
    assert (d.source.topic, d.source.partition, d.source.offset, d.source.timestamp_ms) == ("in", 2, 41, 1_700_000_000_000)
    assert d.content_hash == content_hash("hello world") != content_hash("hello world!")


def test_a_delete_needs_no_text():
    d = decode(encode_document("doc-1", op="delete"))
    assert isinstance(d, Document) and d.op == "delete"


def test_a_null_key_is_accepted():
    assert isinstance(decode(encode_document("doc-1", "x"), key=None), Document)


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
