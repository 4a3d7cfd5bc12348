"""Input contract: turn one Kafka record into a ``Document`` or a ``Rejection`` (pure, no I/O).

Input message: key = document id (bytes; a null key is dead-lettered as ``key_missing`` unless
``allow_null_keys``); value = msgpack map (or, with ``EMBED_INPUT__FORMAT=json``, a JSON object of
the same fields) with ``id`` (str),
``text`` (str), optional ``metadata`` (map, passed through), optional ``op`` (``upsert`` | ``delete``),
optional ``long_text`` (``truncate`` | ``truncate_left`` | ``reject`` | ``chunk``: overrides the
worker's policy for a text longer than the model's window).
Limits that keep every output readable downstream: ids of at most ``MAX_ID_BYTES`` UTF-8 bytes
(the common vector-store id limit) and metadata nested at most ``MAX_METADATA_DEPTH`` levels.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgpack
import msgspec

OPS = ("upsert", "delete")
LONG_TEXT = ("truncate", "truncate_left", "reject", "chunk")
MAX_ID_BYTES = 512
MAX_METADATA_DEPTH = 32


class Reason:
    """Dead-letter reason codes (the ``embed-dlq-reason`` header)."""

    UNDECODABLE = "undecodable"
    NOT_A_MAP = "not_a_map"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    EMPTY_TEXT = "empty_text"
    UNKNOWN_OP = "unknown_op"
    KEY_MISMATCH = "key_mismatch"
    KEY_MISSING = "key_missing"
    ENCODE_FAILED = "encode_failed"
    OUT_OF_MEMORY = "out_of_memory"
    ID_TOO_LONG = "id_too_long"
    METADATA_TOO_DEEP = "metadata_too_deep"
    OUTPUT_TOO_LARGE = "output_too_large"
    UNKNOWN_LONG_TEXT = "unknown_long_text"
    TEXT_TOO_LONG = "text_too_long"
    TRUNCATE = "truncate"  # a Debezium truncate event: a whole table, not a document
    UNAVAILABLE_VALUE = "unavailable_value"  # Debezium left a templated column out (TOAST)


class Source(NamedTuple):
    """Where a message came from; committed offsets are computed from these. A named tuple: one
    is made per message, and a tuple is made several times faster than a frozen dataclass."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int


@dataclass(slots=True)
class Document:
    id: str
    text: str
    op: str
    metadata: Any
    source: Source
    content_hash: str  # of the text alone (the output contract's ``content_hash``)
    raw: tuple[bytes | None, bytes | None] = field(default=(None, None), repr=False)
    token_ids: list[int] | None = field(default=None, repr=False)
    long_text: str | None = None  # the message's own long-text policy, if it has one
    chunk: int | None = None  # this row's chunk number, when the document is embedded in chunks
    group: Any = field(default=None, repr=False)  # the chunks' shared ``Chunked`` (encode.chunking)
    rejected: tuple[str, str] | None = None  # (reason, detail) when the tokenizer turned it away
    epoch: int = 0  # its partition's epoch when taken in (``commit.checkpoint``)
    metadata_hash: str = ""  # of the metadata, when it has any (part of the dedup value)

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids) if self.token_ids is not None else 0

    @property
    def dedup_value(self) -> str:
        """What the dedup store keeps for the id: everything of the message its output depends on.
        The text's hash, the metadata's (``+``) if it has any, the message's policy (``/``) if set."""
        value = (
            f"{self.content_hash}+{self.metadata_hash}" if self.metadata_hash else self.content_hash
        )
        return f"{value}/{self.long_text}" if self.long_text else value


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message that goes to the dead-letter topic unchanged, with its reason."""

    source: Source
    key: bytes | None
    value: bytes | None
    reason: str
    detail: str


def content_hash(text: str) -> str:
    """Stable 128-bit hash of a document's text (hex)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def metadata_hash(metadata: Any) -> str:
    """64-bit hash of a message's metadata as msgpack ("" for none or an empty map): a change of
    metadata alone changes the dedup value, so it reaches the index. Keys keep their order, so the
    same map written in another order is embedded again once: a cost, never a wrong hit. Anything
    msgpack decodes packs again (extension types, timestamps among them); ``repr`` is the last resort."""
    if not metadata:
        return ""
    return hashlib.blake2b(
        msgpack.packb(metadata, use_bin_type=True, default=repr), digest_size=8
    ).hexdigest()


def decode_record(
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    key: bytes | None,
    value: bytes | None,
    *,
    allow_null_keys: bool = False,
    json: bool = False,
) -> Document | Rejection:
    source = Source(topic, partition, offset, timestamp_ms)
    if value is None:
        return Rejection(
            source, key, value, Reason.UNDECODABLE, "value is null (tombstones are not documents)"
        )
    if json:
        try:
            body = msgspec.json.decode(value)
        except Exception as exc:  # msgspec's DecodeError; RecursionError for nesting past the stack
            return Rejection(
                source,
                key,
                value,
                Reason.UNDECODABLE,
                f"not JSON: {type(exc).__name__}: {exc}"[:300],
            )
        if not isinstance(body, dict):
            return Rejection(
                source,
                key,
                value,
                Reason.NOT_A_MAP,
                f"value is a JSON {type(body).__name__}, not an object",
            )
    else:
        try:
            body = msgpack.unpackb(value, raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises several unrelated types for bad input
            return Rejection(
                source,
                key,
                value,
                Reason.UNDECODABLE,
                f"not msgpack: {type(exc).__name__}: {exc}"[:300],
            )
        if not isinstance(body, dict):
            return Rejection(
                source,
                key,
                value,
                Reason.NOT_A_MAP,
                f"value is a msgpack {type(body).__name__}, not a map",
            )
    return document_of(source, key, value, body, allow_null_keys=allow_null_keys)


def document_of(
    source: Source,
    key: bytes | None,
    value: bytes | None,
    body: dict,
    *,
    allow_null_keys: bool = False,
) -> Document | Rejection:
    """The contract's checks on a decoded message body, whatever it was decoded from."""

    def reject(reason: str, detail: str) -> Rejection:
        return Rejection(source, key, value, reason, detail)

    doc_id = body.get("id")
    if doc_id is None:
        return reject(Reason.MISSING_FIELD, "'id' is required")
    if not isinstance(doc_id, str) or not doc_id:
        return reject(Reason.WRONG_TYPE, "'id' must be a non-empty string")
    id_bytes = doc_id.encode("utf-8", "surrogatepass")
    if len(id_bytes) > MAX_ID_BYTES:
        return reject(Reason.ID_TOO_LONG, f"'id' is {len(id_bytes)} bytes; at most {MAX_ID_BYTES}")
    if key is None and not allow_null_keys:
        return reject(
            Reason.KEY_MISSING,
            "the message key must be the document id (null keys scatter one id's versions over partitions; EMBED_KAFKA__ALLOW_NULL_KEYS)",
        )
    if key is not None and key != id_bytes:
        return reject(Reason.KEY_MISMATCH, "the message key must equal the document id")

    op = body.get("op", "upsert")
    if op not in OPS:
        return reject(
            Reason.UNKNOWN_OP, f"'op' must be one of {', '.join(OPS)}, not {str(op)[:50]!r}"
        )
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        return reject(Reason.WRONG_TYPE, "'metadata' must be a map")
    if metadata and _depth(metadata, MAX_METADATA_DEPTH + 1) > MAX_METADATA_DEPTH:
        return reject(
            Reason.METADATA_TOO_DEEP, f"'metadata' is nested more than {MAX_METADATA_DEPTH} levels"
        )
    if metadata and has_big_int(metadata):
        return reject(
            Reason.WRONG_TYPE,
            "'metadata' holds an integer outside 64 bits (JSON allows it; the output's msgpack cannot carry it)",
        )

    long_text = body.get("long_text")
    if long_text is not None and long_text not in LONG_TEXT:
        return reject(
            Reason.UNKNOWN_LONG_TEXT,
            f"'long_text' must be one of {', '.join(LONG_TEXT)}, not {str(long_text)[:50]!r}",
        )
    text = body.get("text")
    if op == "delete":
        return Document(doc_id, "", op, metadata, source, "", (key, value))
    if text is None:
        return reject(Reason.MISSING_FIELD, "'text' is required for an upsert")
    if not isinstance(text, str):
        return reject(Reason.WRONG_TYPE, f"'text' must be a string, not {type(text).__name__}")
    if not text.strip():
        return reject(Reason.EMPTY_TEXT, "'text' is empty or whitespace")
    return Document(
        doc_id,
        text,
        op,
        metadata,
        source,
        content_hash(text),
        (key, value),
        long_text=long_text,
        metadata_hash=metadata_hash(metadata),
    )


class _Input(msgspec.Struct):
    """The well-formed common input message, as msgspec decodes it in C (unknown fields are
    ignored). Its metadata is one level of scalars other than bytes: anything else (nested
    metadata among it) is left to ``decode_record``, which checks the depth limit."""

    id: str
    text: str | None = None
    op: str = "upsert"
    metadata: dict[str, str | int | float | bool | None] | None = None
    long_text: str | None = None


_FAST = msgspec.msgpack.Decoder(_Input)
_FAST_JSON = msgspec.json.Decoder(_Input)


def decode_records(
    records: Iterable, *, allow_null_keys: bool = False, json: bool = False
) -> tuple[list[Document], list[Rejection]]:
    """A poll's records as documents and dead letters, in order of arrival (msgpack values, or
    JSON ones with ``json``).

    The common message takes one typed msgspec decode and a few checks; anything unusual (a
    decode or type error, a limit crossed) goes through ``decode_record``, which names the reason
    exactly as the contract gives it, so both paths reject the same messages for the same reasons.
    """
    docs: list[Document] = []
    rejected: list[Rejection] = []
    decode, blake2b, hash_metadata = (
        (_FAST_JSON if json else _FAST).decode,
        hashlib.blake2b,
        metadata_hash,
    )
    slow = functools.partial(decode_record, allow_null_keys=allow_null_keys, json=json)
    for topic, partition, offset, timestamp, key, value in records:
        try:
            m = decode(value)
        except Exception:  # msgspec raises several types for bad input (invalid UTF-8 among them)
            m = None
        if m is not None:
            doc_id, text, op, metadata = m.id, m.text, m.op, m.metadata
            long_text = m.long_text
            if (
                doc_id
                and len(doc_id)
                <= MAX_ID_BYTES // 4  # at most 4 UTF-8 bytes a character: surely within the limit
                and key is not None
                and key == doc_id.encode()
                and (long_text is None or long_text in LONG_TEXT)
            ):
                source = Source(topic, partition, offset, timestamp)
                if json and metadata and has_big_int(metadata):
                    pass  # the slow path names the reason
                elif op == "upsert" and text and not text.isspace():
                    digest = blake2b(
                        text.encode("utf-8", "surrogatepass"), digest_size=16
                    ).hexdigest()
                    meta = hash_metadata(metadata) if metadata else ""
                    docs.append(
                        Document(
                            doc_id,
                            text,
                            op,
                            metadata,
                            source,
                            digest,
                            (key, value),
                            long_text=long_text,
                            metadata_hash=meta,
                        )
                    )
                    continue
                elif op == "delete":
                    docs.append(Document(doc_id, "", op, metadata, source, "", (key, value)))
                    continue
        item = slow(topic, partition, offset, timestamp, key, value)
        if isinstance(item, Rejection):
            rejected.append(item)
        else:
            docs.append(item)
    return docs, rejected


INT64 = (-(2**63), 2**64)  # what a msgpack integer holds


def has_big_int(value: Any, stop: int = MAX_METADATA_DEPTH + 1) -> bool:
    """Whether an integer outside 64 bits hides in ``value`` (JSON input may carry one)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return not INT64[0] <= value < INT64[1]
    if stop <= 0 or not isinstance(value, (dict, list)):
        return False
    return any(
        has_big_int(v, stop - 1) for v in (value.values() if isinstance(value, dict) else value)
    )


def _depth(value: Any, stop: int) -> int:
    """Nesting depth of maps and arrays (a scalar is 0), counted no further than ``stop``."""
    if stop <= 0 or not isinstance(value, (dict, list, tuple)):
        return 0
    children = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(c, stop - 1) for c in children), default=0)


def encode_document(
    doc_id: str,
    text: str | None = None,
    *,
    op: str = "upsert",
    metadata: dict | None = None,
    long_text: str | None = None,
) -> bytes:
    """The input message value for a document (used by the load generator and tests)."""
    body: dict[str, Any] = {"id": doc_id, "op": op}
    if text is not None:
        body["text"] = text
    if metadata is not None:
        body["metadata"] = metadata
    if long_text is not None:
        body["long_text"] = long_text
    return msgpack.packb(body, use_bin_type=True)


def reject_document(doc: Document, reason: str, detail: str) -> Rejection:
    """A decoded document that failed later (e.g. in the model), as a dead letter of its original bytes."""
    return Rejection(doc.source, doc.raw[0], doc.raw[1], reason, detail)
