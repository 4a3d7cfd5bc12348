"""Output contract (schema version 2): vector messages, delete events and dead letters.

Vector message value (msgpack map): schema_version, op="upsert", id, parent_id, version, chunk,
chunks, model, dim, dtype, vector (little-endian bytes of ``dtype``), content_hash, source {topic,
partition, offset}, produced_at (input Kafka timestamp, ms), embedded_at (ms), metadata.
``id`` is the point's id: the document id, or ``{document id}#{n}`` for chunk n; ``parent_id`` is
the document id; ``version`` the input offset the point was embedded from (every point of one
version of a document has it); ``chunks`` how many chunks that version has (1 when not chunked);
``chunk`` is n, or nil for a whole-document vector. Delete event: schema_version, op="delete", id,
model, source, produced_at, embedded_at, metadata: every point of the document goes. Key = document
id for every message of a document. Headers carry model, dtype, dim, op and schema version so a
consumer can route without decoding the value. (Version 1 had no parent_id, version, chunk, chunks.)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from worker.consume.decode import Document, Rejection, Source
from worker.encode.base import ModelInfo

SCHEMA_VERSION = 2
Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class OutMessage:
    key: bytes | None
    value: bytes | None
    headers: Headers


# What a record adds to its key, value and headers on the wire, at most (record batch header and
# varints), so that a message estimated to fit is one the clients accept.
RECORD_OVERHEAD_BYTES = 128


def wire_size(m: OutMessage) -> int:
    """An upper bound of the message's size as the producer checks it against its limit."""
    return (
        len(m.key or b"")
        + len(m.value or b"")
        + sum(len(k) + len(v) for k, v in m.headers)
        + RECORD_OVERHEAD_BYTES
    )


def _source(src: Source) -> dict[str, Any]:
    return {"topic": src.topic, "partition": src.partition, "offset": src.offset}


@functools.lru_cache(maxsize=16)
def _headers(op: str, info: ModelInfo, dtype: str) -> Headers:
    """One list per (op, model, dtype), shared by every message: the clients only read it."""
    return [
        ("embed-schema", str(SCHEMA_VERSION).encode()),
        ("embed-op", op.encode()),
        ("embed-model", info.name.encode()),
        ("embed-dtype", dtype.encode()),
        ("embed-dim", str(info.dim).encode()),
    ]


def _upsert(
    doc: Document,
    vector: bytes,
    info: ModelInfo,
    vector_dtype: str,
    embedded_at_ms: int,
    chunk: int | None,
    chunks: int,
    pack,
) -> OutMessage:
    src = doc.source
    body = {
        "schema_version": SCHEMA_VERSION,
        "op": "upsert",
        "id": doc.id if chunk is None else f"{doc.id}#{chunk}",
        "parent_id": doc.id,
        "version": src.offset,
        "chunk": chunk,
        "chunks": chunks,
        "model": info.name,
        "dim": info.dim,
        "dtype": vector_dtype,
        "vector": vector,
        "content_hash": doc.content_hash,
        "source": _source(src),
        "produced_at": src.timestamp_ms,
        "embedded_at": embedded_at_ms,
        "metadata": doc.metadata,
    }
    return OutMessage(
        doc.id.encode("utf-8", "surrogatepass"), pack(body), _headers("upsert", info, vector_dtype)
    )


def _le(vector_dtype: str) -> np.dtype:
    return np.dtype(vector_dtype).newbyteorder("<")


def vector_message(
    doc: Document,
    vector: np.ndarray,
    info: ModelInfo,
    vector_dtype: str,
    embedded_at_ms: int,
    *,
    chunk: int | None = None,
    chunks: int = 1,
) -> OutMessage:
    raw = np.ascontiguousarray(vector, dtype=_le(vector_dtype)).tobytes()
    return _upsert(
        doc,
        raw,
        info,
        vector_dtype,
        embedded_at_ms,
        chunk,
        chunks,
        msgpack.Packer(use_bin_type=True).pack,
    )


def vector_messages(
    docs: Sequence[Document],
    vectors: np.ndarray,
    info: ModelInfo,
    vector_dtype: str,
    embedded_at_ms: int,
) -> list[OutMessage]:
    """The vector messages of a batch of whole documents (no chunks): the vectors become
    little-endian bytes once for the batch, and every message shares one header list."""
    dtype = _le(vector_dtype)
    blob = np.ascontiguousarray(vectors, dtype=dtype).tobytes()
    width = info.dim * dtype.itemsize
    pack = msgpack.Packer(use_bin_type=True).pack
    return [
        _upsert(
            d, blob[i * width : (i + 1) * width], info, vector_dtype, embedded_at_ms, None, 1, pack
        )
        for i, d in enumerate(docs)
    ]


def delete_messages(
    doc: Document, info: ModelInfo, now_ms: int, *, tombstone: bool
) -> list[OutMessage]:
    """An explicit delete event, then (if configured) a null-value tombstone for compaction."""
    key = doc.id.encode("utf-8", "surrogatepass")
    body = {
        "schema_version": SCHEMA_VERSION,
        "op": "delete",
        "id": doc.id,
        "model": info.name,
        "source": _source(doc.source),
        "produced_at": doc.source.timestamp_ms,
        "embedded_at": now_ms,
        "metadata": doc.metadata,
    }
    out = [
        OutMessage(key, msgpack.packb(body, use_bin_type=True), _headers("delete", info, "none"))
    ]
    if tombstone:
        out.append(OutMessage(key, None, _headers("delete", info, "none")))
    return out


def dead_letter(rej: Rejection, *, keep_value: bool = True) -> OutMessage:
    """The original key and value, unchanged, with where they came from and why they were rejected.

    Without ``keep_value`` (an original too large for one message) the value is empty and the
    ``embed-dlq-value-bytes`` header gives its size; the source offset still points at it."""
    extra = [] if keep_value else [("embed-dlq-value-bytes", str(len(rej.value or b"")).encode())]
    return OutMessage(
        rej.key,
        rej.value if keep_value else b"",
        extra
        + [
            ("embed-dlq-reason", rej.reason.encode()),
            ("embed-dlq-detail", rej.detail.encode("utf-8", "replace")),
            ("embed-source-topic", rej.source.topic.encode()),
            ("embed-source-partition", str(rej.source.partition).encode()),
            ("embed-source-offset", str(rej.source.offset).encode()),
        ],
    )


def decode_output(value: bytes) -> dict[str, Any]:
    """Parse an output message value; ``vector`` becomes a float32 numpy array."""
    body = msgpack.unpackb(value, raw=False)
    if body.get("op") == "upsert":
        body["vector"] = np.frombuffer(
            body["vector"], dtype=np.dtype(body["dtype"]).newbyteorder("<")
        ).astype(np.float32)
    return body
