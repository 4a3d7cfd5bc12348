"""``embed-worker query``: embed a query with the worker's model configuration and search the index."""

from __future__ import annotations

from worker.config import Settings
from worker.errors import IndexStoreError
from worker.sink.index import Hit, open_index


def search(settings: Settings, text: str, k: int) -> list[Hit]:
    """The top ``k`` documents for ``text``, best first, with their cosine scores."""
    from worker.encode import load_encoder

    if not text.strip():
        raise IndexStoreError("the query text is empty")
    index = open_index(settings.sink, create=False)
    encoder = load_encoder(settings.model)
    other = index.other_model(encoder.info.name)
    if other is not None:
        raise IndexStoreError(
            f"the index at {index.path!r} holds vectors of model {other!r}, not {encoder.info.name!r} (EMBED_MODEL__NAME): "
            "query with the model the worker used"
        )
    if index.dim != encoder.info.dim:
        raise IndexStoreError(
            f"the index holds {index.dim}-dimensional vectors; {encoder.info.name!r} makes {encoder.info.dim}"
        )
    vector = encoder.encode(encoder.tokenize([text]))[0]
    return index.search(vector, k)


def render(query: str, hits: list[Hit], title_keys: tuple[str, ...] = ("title", "name")) -> str:
    lines = [f"top {len(hits)} documents for {query!r}:"]
    for rank, h in enumerate(hits, 1):
        meta = h.metadata if isinstance(h.metadata, dict) else {}
        title = next((str(meta[key]) for key in title_keys if meta.get(key)), "")
        where = (
            f" (chunk {h.chunk + 1} of {h.chunks})" if h.chunk is not None and h.chunks > 1 else ""
        )
        lines.append(
            f"  {rank}. {h.score:.3f}  {h.document}{where}" + (f"  — {title[:80]}" if title else "")
        )
    return "\n".join(lines)
