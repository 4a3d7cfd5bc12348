"""The LanceDB index: plans applied, replays absorbed, odd ids quoted, grouped search."""

import numpy as np
import pytest

from tests.unit.sink.test_events import _delete, _upsert
from worker.consume.decode import decode_record, encode_document
from worker.encode.base import ModelInfo
from worker.errors import IndexStoreError
from worker.publish import codec
from worker.sink.events import plan
from worker.sink.index import Index

ODD = 'it\'s a \\ "quoted" id — ü'


def _keys(index):
    return sorted((r["parent_id"], r["chunk"], r["version"]) for r in index.rows())


def test_versions_replace_each_other_deletes_remove_everything_and_replays_change_nothing(tmp_path):
    index = Index(str(tmp_path), "t")
    run1 = [_upsert("a", 1, n, 3) for n in range(3)] + [
        _upsert(ODD, 2, 0, 2),
        _upsert(ODD, 2, 1, 2),
        _upsert("c", 3),
    ]
    index.apply(plan(run1))
    assert _keys(index) == sorted(
        [("a", 0, 1), ("a", 1, 1), ("a", 2, 1), (ODD, 0, 2), (ODD, 1, 2), ("c", None, 3)]
    )
    run2 = [_upsert("a", 7, 0, 1), _delete(ODD, 8)]  # a shrinks to one chunk, the odd id goes
    index.apply(plan(run2))
    expected = [("a", 0, 7), ("c", None, 3)]
    assert _keys(index) == expected
    for run in (run1, run2, run1 + run2):  # a replay, in the pieces it came in or as one run
        index.apply(plan(run))
    assert _keys(index) == expected
    index.compact()
    assert index.count() == 2


def test_search_returns_documents_once_best_first(tmp_path):
    index = Index(str(tmp_path), "t")
    index.apply(
        plan(
            [
                _upsert("a", 1, 0, 2, (1, 0, 0, 0)),
                _upsert("a", 1, 1, 2, (0.9, 0.1, 0, 0)),
                _upsert("b", 2, vector=(0, 1, 0, 0)),
            ]
        )
    )
    hits = index.search(np.asarray([1, 0, 0, 0], np.float32), 2)
    assert [(h.document, h.chunk) for h in hits] == [("a", 0), ("b", None)]
    assert hits[0].score == pytest.approx(1.0) and hits[1].score == pytest.approx(0.0, abs=1e-6)


def test_a_missing_index_or_another_dimension_is_a_clear_error(tmp_path):
    with pytest.raises(IndexStoreError, match="EMBED_SINK__PATH"):
        Index(str(tmp_path / "nothing"), "t", create=False)
    index = Index(str(tmp_path), "t")
    index.apply(plan([_upsert("a", 1)]))
    doc = decode_record("in", 0, 2, 0, b"b", encode_document("b", "x"))
    msg = codec.vector_message(
        doc,
        np.ones(8, np.float32),
        ModelInfo("big", 8, "float32", "cpu", "mean", True, 16),
        "float32",
        0,
    )
    with pytest.raises(IndexStoreError, match="dimensions"):
        index.apply(plan([(msg.key, msg.value)]))
    assert index.other_model("m") is None and index.other_model("big") == "m"


def test_the_index_knows_its_model_and_an_emptied_one_still_refuses_another_dimension(tmp_path):
    index = Index(str(tmp_path), "t")
    assert index.model is None
    index.apply(plan([_upsert("a", 1)], index.model))
    assert index.model == ("m", 4)
    index.apply(plan([_delete("a", 2)], index.model))
    reopened = Index(str(tmp_path), "t")  # the sink restarted with every document deleted
    assert reopened.count() == 0 and reopened.model == (None, 4)
    doc = decode_record("in", 0, 3, 0, b"b", encode_document("b", "x"))
    wide = codec.vector_message(
        doc,
        np.ones(8, np.float32),
        ModelInfo("big", 8, "float32", "cpu", "mean", True, 16),
        "float32",
        0,
    )
    p = plan([(wide.key, wide.value), _upsert("c", 4)], reopened.model)
    reopened.apply(p)  # no IndexStoreError: the wide vector was left out
    assert (
        sum(p.other_models.values()) == 1
        and reopened.model == ("m", 4)
        and _keys(reopened) == [("c", None, 4)]
    )
