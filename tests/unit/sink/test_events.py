"""The sink's plan: the net effect of a run of output messages, per document."""

import msgpack
import numpy as np

from worker.consume.decode import decode_record, encode_document
from worker.encode.base import ModelInfo
from worker.publish import codec
from worker.sink.events import plan, point_key

INFO = ModelInfo("m", 4, "float32", "cpu", "mean", True, 16)


def _upsert(doc_id, offset, chunk=None, chunks=1, vector=(1, 0, 0, 0)):
    doc = decode_record("in", 0, offset, 0, doc_id.encode(), encode_document(doc_id, "text"))
    msg = codec.vector_message(
        doc, np.asarray(vector, np.float32), INFO, "float32", 0, chunk=chunk, chunks=chunks
    )
    return msg.key, msg.value


def _delete(doc_id, offset):
    doc = decode_record("in", 0, offset, 0, doc_id.encode(), encode_document(doc_id, op="delete"))
    return next((m.key, m.value) for m in codec.delete_messages(doc, INFO, 0, tombstone=False))


def test_the_latest_version_wins_and_its_points_are_kept_with_their_fields():
    p = plan(
        [
            _upsert("a", 1, 0, 3),
            _upsert("a", 1, 1, 3),
            _upsert("a", 1, 2, 3),
            _upsert("a", 5, 0, 2),
            _upsert("a", 5, 1, 2),
        ]
    )
    assert p.keep == {"a": 5} and not p.drop
    assert sorted(pt.id for pt in p.upserts) == ["a#0", "a#1"]
    first = p.points["a"][point_key("a", 0)]
    assert (first.parent_id, first.version, first.chunk, first.chunks) == ("a", 5, 0, 2)
    np.testing.assert_array_equal(first.vector, [1, 0, 0, 0])


def test_a_delete_drops_the_document_and_a_later_upsert_brings_back_only_its_version():
    assert plan([_upsert("a", 1), _delete("a", 2)]).drop == {"a"}
    p = plan([_upsert("a", 1), _delete("a", 2), _upsert("a", 3, 0, 1)])
    assert not p.drop and p.keep == {"a": 3} and [pt.id for pt in p.upserts] == ["a#0"]


def test_a_tombstone_deletes_by_key_and_foreign_messages_are_skipped_not_fatal():
    p = plan(
        [
            _upsert("b", 1),
            (b"a", None),
            (b"x", b"\xc1not msgpack"),
            (b"y", msgpack.packb([1, 2])),
            (b"z", msgpack.packb({"op": "merge"})),
        ]
    )
    assert p.drop == {"a"} and p.keep == {"b": 1} and p.skipped == 3


def test_schema_1_messages_are_whole_document_points_versioned_by_their_offset():
    body = {
        "schema_version": 1,
        "op": "upsert",
        "id": "old",
        "model": "m",
        "dim": 2,
        "dtype": "float32",
        "vector": np.asarray([1, 2], "<f4").tobytes(),
        "source": {"topic": "in", "partition": 0, "offset": 9},
    }
    (pt,) = plan([(b"old", msgpack.packb(body))]).upserts
    assert (pt.id, pt.parent_id, pt.version, pt.chunk, pt.chunks) == ("old", "old", 9, None, 1)


def test_point_keys_do_not_collide_when_ids_contain_the_chunk_separator():
    assert point_key("a#1", None) != point_key("a", 1)


def _vector_of(info, doc_id, offset):
    doc = decode_record("in", 0, offset, 0, doc_id.encode(), encode_document(doc_id, "text"))
    msg = codec.vector_message(doc, np.ones(info.dim, np.float32), info, "float32", 0)
    return msg.key, msg.value


def test_vectors_of_another_model_or_dimension_are_left_out_and_counted_deletes_still_apply():
    # a model rollout on the same topic: the sink raised on the new dimension, restarted at the same
    # offset and raised again, for ever
    other = ModelInfo("m2", 8, "float32", "cpu", "mean", True, 16)
    renamed = ModelInfo("m2", 4, "float32", "cpu", "mean", True, 16)
    messages = [
        _upsert("a", 1),
        _vector_of(other, "b", 2),
        _vector_of(other, "a", 3),
        _vector_of(renamed, "c", 4),
        _delete("d", 5),
    ]
    p = plan(messages, ("m", 4))
    assert p.keep == {"a": 1} and p.drop == {"d"} and p.model == ("m", 4)
    assert (
        dict(p.other_models) == {"m2 (8 dimensions)": 2, "m2 (4 dimensions)": 1} and p.skipped == 0
    )
    first = plan(
        [_vector_of(other, "b", 2), _upsert("a", 1)]
    )  # an empty index takes the first model it sees
    assert (
        first.model == ("m2", 8)
        and first.keep == {"b": 2}
        and sum(first.other_models.values()) == 1
    )


def test_an_emptied_index_keeps_its_dimension_and_takes_the_next_model_of_that_dimension():
    # every document deleted, the sink restarted: the empty table still has its vector width
    other = ModelInfo("m2", 8, "float32", "cpu", "mean", True, 16)
    p = plan([_vector_of(other, "b", 2), _upsert("a", 3)], (None, 4))
    assert (
        p.model == ("m", 4)
        and p.keep == {"a": 3}
        and dict(p.other_models) == {"m2 (8 dimensions)": 1}
    )
