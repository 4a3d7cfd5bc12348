"""Document sources: JSONL files and the bundled sample corpus of real documents."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Iterator

SAMPLE = Path(__file__).parent / "data" / "sample-docs.jsonl.gz"


class CorpusError(ValueError):
    """A corpus file holds a line that is not a document."""


def read_jsonl(path: str | Path) -> Iterator[dict]:
    """Documents from a JSONL file (``.gz`` too): one object per line with ``id``, ``text``, optional ``metadata``."""
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
            if not isinstance(doc, dict) or not isinstance(doc.get("id"), str) or not isinstance(doc.get("text"), str):
                raise CorpusError(f"{path}:{lineno}: each line needs a string 'id' and a string 'text'")
            yield doc


def sample_corpus(limit: int | None = None) -> list[dict]:
    """The bundled corpus: 2,000 real documents (CPython's reference topics and docstrings)."""
    docs = list(read_jsonl(SAMPLE))
    return docs[:limit] if limit is not None else docs
