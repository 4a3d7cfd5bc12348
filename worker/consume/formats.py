"""Input formats (``EMBED_INPUT__FORMAT``): what a record's bytes are, and how they become documents.

- ``msgpack``: the input contract (``decode``), the default.
- ``json``: the contract's fields as a JSON object; or, with a text template, any JSON object
  mapped to a document (an application's own events).
- ``debezium``: Debezium change events (JSON, with or without the converter's schema wrapper):
  ``op`` ``c``/``r``/``u`` upsert the row in ``after``, ``d`` deletes the row in ``before``; the
  null-value tombstone that follows a delete deletes again (idempotent downstream); ``t``
  (truncate) and anything else are dead-lettered with their reason.

The mapping from a row (a JSON object, or a change event's ``after``/``before``) to a document:
the id is ``id_field`` of the row, or else the record key's only field (Debezium keys are the
primary key as JSON); the text is ``template`` over the row's fields (``{title}\\n\\n{body}``: a
field that is null or empty is left out with the literal text before it); ``metadata_fields``
are copied into the metadata. Every malformed record is a ``Rejection`` with its reason, as for
the contract. Decoding is per poll, each record in one msgspec JSON decode (C).
"""

from __future__ import annotations

import functools
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from worker.consume import decode
from worker.consume.decode import (
    MAX_ID_BYTES,
    MAX_METADATA_DEPTH,
    Document,
    Reason,
    Rejection,
    Source,
    content_hash,
    has_big_int,
    metadata_hash,
)
from worker.errors import ConfigError

FORMATS = ("msgpack", "json", "debezium")
UNAVAILABLE = "__debezium_unavailable_value"  # Debezium's stand-in for an unchanged TOASTed column
UPSERT_OPS = frozenset("cru")  # create, read (snapshot), update
Decoder = Callable[[Iterable], tuple[list[Document], list[Rejection]]]


class Template:
    """A text template over a row's fields, parsed once. Each ``{field}`` owns the literal text
    before it: a field that is null or empty is left out together with that text, so
    ``{title}\\n\\n{body}`` gives the body alone when there is no title. The result is stripped.
    ``{{`` and ``}}`` are literal braces. A backslash-n or backslash-t typed literally (an env
    file) reads as a newline or a tab."""

    def __init__(self, template: str) -> None:
        template = template.replace("\\n", "\n").replace(
            "\\t", "\t"
        )  # as typed in an env file: \n, \t
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise ConfigError(f"invalid setting EMBED_INPUT__TEXT_TEMPLATE: {exc}") from None
        self.parts: list[tuple[str, str]] = []
        pending = ""  # literal text (escaped braces split it in pieces) waiting for the next field
        for literal, name, spec, conversion in parsed:
            pending += literal
            if name is None:
                continue
            if not name or spec or conversion or not name.isidentifier():
                raise ConfigError(
                    f"invalid setting EMBED_INPUT__TEXT_TEMPLATE: {{{name}}} is not a plain field name (use {{column}})"
                )
            self.parts.append((pending, name))
            pending = ""
        self.tail = pending
        if not self.parts:
            raise ConfigError(
                "invalid setting EMBED_INPUT__TEXT_TEMPLATE: it names no field (e.g. {title}\\n\\n{body})"
            )
        self.fields = tuple(name for _, name in self.parts)

    def render(self, row: dict) -> tuple[str | None, str, str]:
        """(text, reason, detail): the text, or None with why: a field absent from the row, one
        that is not text, a number or a boolean, Debezium's placeholder for a value it did not
        send, or every field empty."""
        out: list[str] = []
        for literal, name in self.parts:
            if name not in row:
                return (
                    None,
                    Reason.MISSING_FIELD,
                    f"the text template's field {name!r} is not in the row",
                )
            value = row[name]
            if value is None or value == "":
                continue
            if value == UNAVAILABLE:
                return (
                    None,
                    Reason.UNAVAILABLE_VALUE,
                    f"Debezium did not send {name!r} (an unchanged TOASTed column): set REPLICA IDENTITY FULL on the table",
                )
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif not isinstance(value, (str, int, float)):
                return (
                    None,
                    Reason.WRONG_TYPE,
                    f"the text template's field {name!r} is a {type(value).__name__}, not text",
                )
            out.append(literal)
            out.append(value if isinstance(value, str) else str(value))
        if not out:
            return (
                None,
                Reason.EMPTY_TEXT,
                f"every field of the text template ({', '.join(self.fields)}) is null or empty",
            )
        out.append(self.tail)
        return "".join(out).strip(), "", ""


@dataclass(frozen=True)
class Mapping:
    """How a row becomes a document (see the module's docstring)."""

    template: Template
    id_field: str | None = None
    metadata_fields: tuple[str, ...] = ()


class _Change(msgspec.Struct):
    """The fields of a change event the worker reads; the rest (``source``, ``ts_ms``) msgspec
    skips without building anything."""

    op: Any = None
    before: dict | None = None
    after: dict | None = None


class _Envelope(_Change):
    schema: msgspec.Raw = msgspec.Raw(
        b""
    )  # the converter's schema (a few KB a record): kept as bytes, never built
    payload: _Change | None = None  # the event, when the converter wraps it (schemas.enable)


_ENVELOPE = msgspec.json.Decoder(_Envelope)
_JSON = msgspec.json.Decoder()
DECODE_ERRORS = (
    msgspec.DecodeError,
    msgspec.ValidationError,
    RecursionError,
    ValueError,
)  # nesting past the stack: RecursionError


def _unwrap(value: Any) -> Any:
    """The converter's ``{"schema": ..., "payload": ...}`` wrapper off, when it is there."""
    if isinstance(value, dict) and "payload" in value and "schema" in value:
        return value["payload"]
    return value


def _id_value(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    return value if isinstance(value, str) else str(value)


class MappedDecoder:
    """JSON objects (``envelope=False``) or Debezium change events (``envelope=True``) to documents."""

    def __init__(self, mapping: Mapping, *, envelope: bool, allow_null_keys: bool = False) -> None:
        self.mapping = mapping
        self.envelope = envelope
        self.allow_null_keys = allow_null_keys

    def __call__(self, records: Iterable) -> tuple[list[Document], list[Rejection]]:
        docs: list[Document] = []
        rejected: list[Rejection] = []
        one = self.record
        for topic, partition, offset, timestamp, key, value in records:
            item = one(Source(topic, partition, offset, timestamp), key, value)
            if isinstance(item, Rejection):
                rejected.append(item)
            else:
                docs.append(item)
        return docs, rejected

    def record(
        self, source: Source, key: bytes | None, value: bytes | None
    ) -> Document | Rejection:
        def reject(reason: str, detail: str) -> Rejection:
            return Rejection(source, key, value, reason, detail)

        # The key: a JSON object (Debezium's primary key, with or without the converter's wrapper),
        # else the id's own bytes, as in the contract.
        key_obj: Any = None
        if key is not None:
            if key[:1] == b"{":
                try:
                    key_obj = _unwrap(_JSON.decode(key))
                except DECODE_ERRORS as exc:
                    return reject(Reason.UNDECODABLE, f"the key is not JSON: {exc}"[:300])
            else:
                try:
                    key_obj = key.decode("utf-8")
                except UnicodeDecodeError:
                    return reject(
                        Reason.UNDECODABLE, "the key is neither a JSON object nor UTF-8 text"
                    )
        null_key = key is None and not self.allow_null_keys
        no_key = "the message key must identify the document (null keys scatter one id's versions over partitions; EMBED_KAFKA__ALLOW_NULL_KEYS)"
        if value is None:  # a tombstone: the row is gone (Debezium sends one after each delete)
            if null_key:
                return reject(Reason.KEY_MISSING, no_key)
            doc_id, reason, why = self._id(None, key_obj)
            if doc_id is None:
                return reject(reason, f"tombstone: {why}")
            if len(doc_id.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
                return reject(Reason.ID_TOO_LONG, f"the id is more than {MAX_ID_BYTES} bytes")
            return Document(doc_id, "", "delete", None, source, "", (key, value))

        change = None
        if self.envelope:
            try:
                change = _ENVELOPE.decode(value)
            except DECODE_ERRORS:
                change = None  # not an object, not JSON, a field of another type: read again below, for the reason
        if change is not None:
            event: _Change = change
            if (
                len(change.schema) and change.payload is not None
            ):  # the wrapper: schema and payload both there
                event = change.payload
            body = {"op": event.op, "before": event.before, "after": event.after}
        else:
            try:
                body = _JSON.decode(value)
            except DECODE_ERRORS as exc:
                return reject(Reason.UNDECODABLE, f"not JSON: {exc}"[:300])
            if self.envelope:
                body = _unwrap(body)
            if not isinstance(body, dict):
                return reject(
                    Reason.NOT_A_MAP, f"value is a JSON {type(body).__name__}, not an object"
                )
        if self.envelope:
            op = body.get("op")
            if not isinstance(op, str) and op is not None:
                return reject(
                    Reason.UNKNOWN_OP, f"Debezium 'op' must be a string, not a {type(op).__name__}"
                )
            if op in UPSERT_OPS:
                row, delete = body.get("after"), False
            elif op == "d":
                row, delete = body.get("before"), True
            elif op == "t":
                return reject(
                    Reason.TRUNCATE,
                    "a truncate of the whole table cannot be applied document by document (docs/index-updates.md: Change data capture)",
                )
            elif op is None:
                return reject(
                    Reason.MISSING_FIELD,
                    "'op' is required in a Debezium change event (the ExtractNewRecordState transform removes it: read the raw events)",
                )
            else:
                return reject(
                    Reason.UNKNOWN_OP,
                    f"Debezium 'op' must be one of c, r, u, d (t is refused), not {op[:50]!r}",
                )
            if row is None and not delete:
                return reject(Reason.MISSING_FIELD, f"'after' is required for op {op!r}")
            if row is not None and not isinstance(row, dict):
                return reject(
                    Reason.WRONG_TYPE,
                    f"'{'before' if delete else 'after'}' must be an object, not a {type(row).__name__}",
                )
        else:
            row, delete = body, False
        if null_key:  # checked after the op: a truncate, keyless by nature, is refused as one
            return reject(Reason.KEY_MISSING, no_key)
        doc_id, reason, why = self._id(row, key_obj)
        if doc_id is None:
            return reject(reason, why)
        if len(doc_id.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
            return reject(Reason.ID_TOO_LONG, f"the id is more than {MAX_ID_BYTES} bytes")
        if delete:
            return Document(doc_id, "", "delete", None, source, "", (key, value))
        assert row is not None  # only a delete may lack its row ('after' is checked above)
        text, reason, detail = self.mapping.template.render(row)
        if text is None:
            return reject(reason, detail)
        if not text:
            return reject(
                Reason.EMPTY_TEXT,
                f"every field of the text template ({', '.join(self.mapping.template.fields)}) is null or empty",
            )
        metadata = {f: row[f] for f in self.mapping.metadata_fields if f in row} or None
        if metadata:
            if decode._depth(metadata, MAX_METADATA_DEPTH + 1) > MAX_METADATA_DEPTH:
                return reject(
                    Reason.METADATA_TOO_DEEP,
                    f"the metadata is nested more than {MAX_METADATA_DEPTH} levels",
                )
            if has_big_int(metadata):
                return reject(
                    Reason.WRONG_TYPE, "a metadata field holds an integer outside 64 bits"
                )
            if UNAVAILABLE in metadata.values():
                gone = next(f for f, v in metadata.items() if v == UNAVAILABLE)
                return reject(
                    Reason.UNAVAILABLE_VALUE,
                    f"Debezium did not send {gone!r} (an unchanged TOASTed column): set REPLICA IDENTITY FULL on the table",
                )
        return Document(
            doc_id,
            text,
            "upsert",
            metadata,
            source,
            content_hash(text),
            (key, value),
            metadata_hash=metadata_hash(metadata),
        )

    def _id(self, row: dict | None, key_obj: Any) -> tuple[str | None, str, str]:
        """(id, reason, detail): the document id, or None and why.

        A key that is an object (a primary key) decides: its only column's value, ``id_field``'s
        when it names one of its columns, or every column (``col=value/...``, a composite key) when
        ``id_field`` is unset; the row must agree where it holds the same column. An ``id_field``
        that is not a key column is refused: deletes and per-key order could not follow it. Other
        keys are the id's text; without a key, ``id_field`` of the row."""
        field = self.mapping.id_field
        if isinstance(key_obj, dict):
            if not key_obj:
                return None, Reason.MISSING_FIELD, "the key is an empty object"
            if field is not None:
                if field not in key_obj:
                    return (
                        None,
                        Reason.KEY_MISMATCH,
                        f"EMBED_INPUT__ID_FIELD {field!r} is not a column of the record key ({', '.join(map(str, list(key_obj)[:5]))})",
                    )
                columns = {field: key_obj[field]}
            else:
                columns = key_obj
            values = [_id_value(v) for v in columns.values()]
            if any(v is None or v == "" for v in values):
                return (
                    None,
                    Reason.WRONG_TYPE,
                    f"the key's id columns must be non-empty strings or integers, not {list(columns.values())!r:.80}",
                )
            doc_id = (
                values[0]
                if len(values) == 1
                else "/".join(f"{c}={v}" for c, v in zip(columns, values))
            )
            if row is not None:
                for column, v in zip(columns, values):
                    held = row.get(column)
                    if held is not None and _id_value(held) != v:
                        assert v is not None  # every key column has a value: checked above
                        return (
                            None,
                            Reason.KEY_MISMATCH,
                            f"the row's {column!r} ({str(held)[:50]!r}) differs from the message key's ({v[:50]!r})",
                        )
            return doc_id, "", ""
        if key_obj is not None:  # the key's text is the id
            if (
                field is not None
                and row is not None
                and row.get(field) is not None
                and _id_value(row[field]) != key_obj
            ):
                return (
                    None,
                    Reason.KEY_MISMATCH,
                    f"the id field {field!r} ({str(row[field])[:50]!r}) differs from the message key ({key_obj[:50]!r})",
                )
            return (
                (key_obj, "", "") if key_obj else (None, Reason.MISSING_FIELD, "the key is empty")
            )
        if field is not None and row is not None and field in row:
            value = _id_value(row[field])
            if not value:
                return (
                    None,
                    Reason.WRONG_TYPE,
                    f"the id field {field!r} must be a non-empty string or an integer, not {row[field]!r:.50}",
                )
            return value, "", ""
        where = (
            f"{field!r} is not in the row and there is no key"
            if field
            else "no key, and EMBED_INPUT__ID_FIELD is unset"
        )
        return None, Reason.MISSING_FIELD, f"no document id: {where}"


def make_decoder(
    fmt: str, *, mapping: Mapping | None = None, allow_null_keys: bool = False
) -> Decoder:
    """The poll decoder for a format (``decode.decode_records`` for the contract)."""
    if fmt == "msgpack" and mapping is None:
        return functools.partial(decode.decode_records, allow_null_keys=allow_null_keys)
    if fmt == "json" and mapping is None:
        return functools.partial(decode.decode_records, allow_null_keys=allow_null_keys, json=True)
    if fmt in ("json", "debezium") and mapping is not None:
        return MappedDecoder(mapping, envelope=fmt == "debezium", allow_null_keys=allow_null_keys)
    if fmt == "debezium":
        raise ConfigError(
            "invalid setting EMBED_INPUT__TEXT_TEMPLATE: required with EMBED_INPUT__FORMAT=debezium (e.g. {title}\\n\\n{body})"
        )
    raise ConfigError(
        f"invalid setting EMBED_INPUT__FORMAT: {fmt!r} ({', '.join(FORMATS)}; a text template needs json or debezium)"
    )


def decoder_for(settings: Any, *, allow_null_keys: bool = False) -> Decoder:
    """The poll decoder for the worker's ``InputSettings`` (``EMBED_INPUT__*``)."""
    mapping = None
    if settings.text_template is not None:
        mapping = Mapping(
            Template(settings.text_template), settings.id_field, settings.metadata_columns
        )
    return make_decoder(settings.format, mapping=mapping, allow_null_keys=allow_null_keys)
