import gzip
import json

import pytest

from loadgen.corpus import CorpusError, read_jsonl, read_parquet, read_text_lines, sample_corpus


def test_jsonl_plain_and_gzipped(tmp_path):
    rows = [{"id": "a", "text": "alpha", "metadata": {"k": 1}}, {"id": "b", "text": "beta"}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    with gzip.open(tmp_path / "d.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in rows))
    assert (
        list(read_jsonl(tmp_path / "d.jsonl")) == rows == list(read_jsonl(tmp_path / "d.jsonl.gz"))
    )


@pytest.mark.parametrize("line", ["not json", '{"id": 3, "text": "x"}', '{"id": "a"}', "[1, 2]"])
def test_jsonl_errors_name_the_line(tmp_path, line):
    (tmp_path / "d.jsonl").write_text('{"id": "ok", "text": "fine"}\n' + line + "\n")
    with pytest.raises(CorpusError, match=r"d.jsonl:2"):
        list(read_jsonl(tmp_path / "d.jsonl"))


def test_plain_text_one_document_per_line(tmp_path):
    (tmp_path / "notes.txt").write_text("first line\n\nthird line\n")
    assert list(read_text_lines(tmp_path / "notes.txt")) == [
        {"id": "notes-1", "text": "first line"},
        {"id": "notes-3", "text": "third line"},
    ]


def test_parquet_with_and_without_an_id_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"doc": ["d1", "d2", "d3"], "body": ["one", "two", "three"], "n": [1, 2, 3]}),
        tmp_path / "c.parquet",
        row_group_size=2,
    )
    assert list(read_parquet(tmp_path / "c.parquet", "body", "doc")) == [
        {"id": "d1", "text": "one"},
        {"id": "d2", "text": "two"},
        {"id": "d3", "text": "three"},
    ]
    assert [d["id"] for d in read_parquet(tmp_path / "c.parquet", "body")] == ["c-0", "c-1", "c-2"]
    with pytest.raises(CorpusError, match="no column 'text'"):
        list(read_parquet(tmp_path / "c.parquet", "text"))


def test_the_sample_corpus_is_2000_real_documents():
    docs = sample_corpus()
    assert len(docs) == 2000 and len({d["id"] for d in docs}) == 2000
    assert any("argparse" in d["id"] for d in docs)
