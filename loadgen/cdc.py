"""Documents as the change events Debezium's PostgreSQL connector writes for a table of articles.

No Kafka Connect runs here, so the load generator writes what it would: for a table
``public.articles(id text primary key, title text, body text, lang text)`` read through the JSON
converter, the record key is the primary key (``{"id": ...}``) and the value the change-event
envelope (``before``, ``after``, ``source``, ``op``, ``ts_ms``, ``transaction``), each wrapped in
``{"schema": ..., "payload": ...}`` when the converter's ``schemas.enable`` is on (its default).
A delete is an ``op: "d"`` event whose ``before`` holds the primary key (the table's default
replica identity), followed by a tombstone: the same key with a null value. The worker reads these
with ``EMBED_INPUT__FORMAT=debezium`` and ``EMBED_INPUT__TEXT_TEMPLATE={title}\\n\\n{body}``.
"""

from __future__ import annotations

import json
import time
from typing import Any

TABLE = "articles"
TEMPLATE = "{title}\n\n{body}"
COLUMNS = (
    ("id", "string", False),
    ("title", "string", True),
    ("body", "string", True),
    ("lang", "string", True),
)
_SOURCE = {
    "version": "2.7.3.Final",
    "connector": "postgresql",
    "name": "shop",
    "snapshot": "false",
    "db": "shop",
    "schema": "public",
    "table": TABLE,
}


def _row_schema(name: str) -> dict:
    fields = [
        {"type": kind, "optional": optional, "field": column} for column, kind, optional in COLUMNS
    ]
    return {
        "type": "struct",
        "fields": fields,
        "optional": True,
        "name": f"shop.public.{TABLE}.{name}",
    }


def _envelope_schema() -> dict:
    source = {
        "type": "struct",
        "optional": False,
        "name": "io.debezium.connector.postgresql.Source",
        "field": "source",
        "fields": [{"type": "string", "optional": False, "field": k} for k in _SOURCE]
        + [
            {"type": "int64", "optional": False, "field": "ts_ms"},
            {"type": "int64", "optional": True, "field": "lsn"},
        ],
    }
    return {
        "type": "struct",
        "optional": False,
        "name": f"shop.public.{TABLE}.Envelope",
        "version": 2,
        "fields": [
            {**_row_schema("Value"), "field": "before"},
            {**_row_schema("Value"), "field": "after"},
            source,
            {"type": "string", "optional": False, "field": "op"},
            {"type": "int64", "optional": True, "field": "ts_ms"},
            {
                "type": "struct",
                "optional": True,
                "name": "event.block",
                "version": 1,
                "field": "transaction",
                "fields": [
                    {"type": "string", "optional": False, "field": "id"},
                    {"type": "int64", "optional": False, "field": "total_order"},
                    {"type": "int64", "optional": False, "field": "data_collection_order"},
                ],
            },
        ],
    }


_KEY_SCHEMA = {
    "type": "struct",
    "fields": [{"type": "string", "optional": False, "field": "id"}],
    "optional": False,
    "name": f"shop.public.{TABLE}.Key",
}
_ENVELOPE_SCHEMA = _envelope_schema()


def row(doc: dict) -> dict:
    """The table row a load-generator document stands for: its text is the body."""
    meta = doc.get("metadata") or {}
    return {
        "id": doc["id"],
        "title": meta.get("title"),
        "body": doc.get("text"),
        "lang": meta.get("lang"),
    }


def key(doc_id: str, *, schema: bool = True) -> bytes:
    payload = {"id": doc_id}
    return json.dumps(
        {"schema": _KEY_SCHEMA, "payload": payload} if schema else payload, ensure_ascii=False
    ).encode()


def change_event(
    doc: dict, *, lsn: int, schema: bool = True, snapshot: bool = False
) -> bytes | None:
    """The value Debezium writes for ``doc``: an upsert is ``c`` (``r`` in a snapshot), a delete
    ``d`` with the key in ``before``; ``op: "tombstone"`` is the null value that follows a delete."""
    op = doc.get("op", "upsert")
    if op == "tombstone":
        return None
    now = int(time.time() * 1000)
    snapshot = snapshot or doc.get("debezium_op") == "r"
    source = {
        **_SOURCE,
        "snapshot": "true" if snapshot else "false",
        "ts_ms": now,
        "sequence": json.dumps([None, str(lsn)]),
        "txId": lsn // 8,
        "lsn": lsn,
        "xmin": None,
    }
    payload: dict[str, Any] = {
        "before": None,
        "after": None,
        "source": source,
        "ts_ms": now,
        "transaction": None,
    }
    if op == "delete":
        payload["op"] = "d"
        payload["before"] = {"id": doc["id"], "title": None, "body": None, "lang": None}
    else:
        payload["op"] = "r" if snapshot else doc.get("debezium_op", "c")
        payload["after"] = row(doc)
    return json.dumps(
        {"schema": _ENVELOPE_SCHEMA, "payload": payload} if schema else payload, ensure_ascii=False
    ).encode()  # raw UTF-8, as Jackson writes


def with_tombstones(docs: list[dict]) -> list[dict]:
    """``docs`` with a tombstone after each delete, as Debezium sends them by default."""
    out: list[dict] = []
    for doc in docs:
        out.append(doc)
        if doc.get("op") == "delete":
            out.append({"id": doc["id"], "op": "tombstone"})
    return out


class DebeziumEncoder:
    """``publish``'s encoder for Debezium events: (key, value) of each document, LSNs rising."""

    def __init__(self, *, schema: bool = True) -> None:
        self.schema = schema
        self.lsn = 0

    def __call__(self, doc: dict) -> tuple[bytes, bytes | None]:
        self.lsn += 8
        return key(doc["id"], schema=self.schema), change_event(
            doc, lsn=self.lsn, schema=self.schema
        )
