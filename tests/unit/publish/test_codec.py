import msgpack
import numpy as np
import pytest

from worker.consume.decode import Document, Rejection, Source
from worker.encode.base import ModelInfo
from worker.publish.codec import (
    SCHEMA_VERSION,
    dead_letter,
    decode_output,
    delete_messages,
    vector_message,
)

INFO = ModelInfo("m", 4, "float32", "cpu", "mean", True, 128)
DOC = Document("doc-1", "hello", "upsert", {"k": "v"}, Source("in", 1, 9, 1234), "abc")


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_vector_message_round_trips_as_little_endian_bytes(dtype):
    vec = np.array([0.5, -1.25, 3.0, 0.0], dtype=np.float32)
    msg = vector_message(DOC, vec, INFO, dtype, 5678)
    assert msg.key == b"doc-1"
    raw = msgpack.unpackb(msg.value, raw=False)
    assert raw["vector"] == vec.astype(np.dtype(dtype).newbyteorder("<")).tobytes()
    out = decode_output(msg.value)
    np.testing.assert_array_equal(out["vector"], vec)
    assert out["schema_version"] == SCHEMA_VERSION and out["op"] == "upsert"
    assert (out["id"], out["model"], out["dim"], out["dtype"], out["content_hash"]) == (
        "doc-1",
        "m",
        4,
        dtype,
        "abc",
    )
    assert out["source"] == {"topic": "in", "partition": 1, "offset": 9}
    assert (out["produced_at"], out["embedded_at"], out["metadata"]) == (1234, 5678, {"k": "v"})
    headers = dict(msg.headers)
    assert (
        headers["embed-model"] == b"m"
        and headers["embed-dim"] == b"4"
        and headers["embed-dtype"] == dtype.encode()
    )


def test_delete_is_an_explicit_event_plus_an_optional_tombstone():
    only = delete_messages(DOC, INFO, 99, tombstone=False)
    assert len(only) == 1
    body = decode_output(only[0].value)
    assert (body["op"], body["id"], body["source"]["offset"]) == ("delete", "doc-1", 9)
    both = delete_messages(DOC, INFO, 99, tombstone=True)
    assert [m.value is None for m in both] == [False, True]
    assert all(m.key == b"doc-1" for m in both)


def test_dead_letter_keeps_the_original_bytes_and_says_why():
    rej = Rejection(Source("in", 3, 77, 0), b"k", b"\x00raw", "undecodable", "not msgpack")
    msg = dead_letter(rej)
    assert (msg.key, msg.value) == (b"k", b"\x00raw")
    h = dict(msg.headers)
    assert h["embed-dlq-reason"] == b"undecodable"
    assert (h["embed-source-topic"], h["embed-source-partition"], h["embed-source-offset"]) == (
        b"in",
        b"3",
        b"77",
    )
