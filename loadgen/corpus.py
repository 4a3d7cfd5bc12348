"""Document sources: JSONL files and the bundled sample corpus of real documents."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

SAMPLE = Path(__file__).parent / "data" / "sample-docs.jsonl.gz"


class CorpusError(ValueError):
    """A corpus file holds a line that is not a document."""


def read_jsonl(path: str | Path) -> Iterator[dict]:
    """Documents from a JSONL file (``.gz`` too): one object per line with ``id``, ``text``, optional ``metadata`` and ``long_text``."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(f"{path}:{lineno}: not JSON: {exc}") from None
            if (
                not isinstance(doc, dict)
                or not isinstance(doc.get("id"), str)
                or not isinstance(doc.get("text"), str)
            ):
                raise CorpusError(
                    f"{path}:{lineno}: each line needs a string 'id' and a string 'text'"
                )
            yield doc


def sample_corpus(limit: int | None = None) -> list[dict]:
    """The bundled corpus: 2,000 real documents (CPython's reference topics and docstrings)."""
    docs = list(read_jsonl(SAMPLE))
    return docs[:limit] if limit is not None else docs


def read_text_lines(path: str | Path, *, prefix: str | None = None) -> Iterator[dict]:
    """One document per non-empty line; ids are ``{prefix or file stem}-{line number}``."""
    path = Path(path)
    stem = prefix or path.name.split(".")[0]
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                yield {"id": f"{stem}-{lineno}", "text": line.rstrip("\n")}


def read_parquet(
    path: str | Path, text_column: str, id_column: str | None = None
) -> Iterator[dict]:
    """Documents from a Parquet file's ``text_column`` (ids from ``id_column``, else row numbers)."""
    import pyarrow.parquet as pq

    path = Path(path)
    table = pq.ParquetFile(path)
    names = table.schema_arrow.names
    for col in filter(None, (text_column, id_column)):
        if col not in names:
            raise CorpusError(f"{path}: no column {col!r} (columns: {', '.join(names)})")
    row = 0
    for batch in table.iter_batches(columns=[c for c in (text_column, id_column) if c]):
        texts = batch.column(text_column).to_pylist()
        ids = batch.column(id_column).to_pylist() if id_column else None
        for i, text in enumerate(texts):
            doc_id = str(ids[i]) if ids else f"{path.stem}-{row}"
            row += 1
            if text is None:
                raise CorpusError(f"{path}: row {row - 1} has no {text_column!r}")
            yield {"id": doc_id, "text": str(text)}
