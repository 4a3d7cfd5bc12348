"""What the index must do for a run of output messages (pure: no Kafka, no store).

The event model (docs/index-updates.md, "Applying the events"): every message of a document is keyed by its id, so a
document's messages reach the sink in order. An upsert carries the point's ``id``, its document
(``parent_id``) and the ``version`` (input offset) it was embedded from; a document's points are
exactly those of its latest version. A delete event, or a null-value tombstone, removes every point
of the document.

Only the net effect of a run counts, per document: either drop it, or keep only one version (points
of any other version go: shrunk-away chunks, a truncated document that is now chunked) and upsert
that version's points. Applying a plan twice gives the same index, so a replay after a crash is safe.

An index holds the vectors of one model: an upsert of another model or dimension (a rollout that
reused the topic) is left out of the plan and counted in ``other_models``, never applied and never
fatal. Deletes apply whatever model sent them: the document is gone at its source.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import msgpack
import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Point:
    key: str  # the index's primary key: [document id, chunk] as JSON, unambiguous whatever the ids hold
    id: str
    parent_id: str
    version: int
    chunk: int | None
    chunks: int
    vector: np.ndarray
    content_hash: str
    model: str
    metadata: str  # JSON

    def row(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__slots__}


@dataclass(slots=True)
class Plan:
    drop: set[str] = field(default_factory=set)  # documents all of whose points go
    keep: dict[str, int] = field(default_factory=dict)  # document → the one version that stays
    points: dict[str, dict[str, Point]] = field(
        default_factory=dict
    )  # document → its new points, by key
    skipped: int = 0  # messages that are not vector messages or delete events (logged)
    model: tuple[str | None, int] | None = (
        None  # (model, dimension) of the vectors kept: the index's
    )
    other_models: Counter = field(
        default_factory=Counter
    )  # model → vectors left out for not being the index's

    @property
    def upserts(self) -> list[Point]:
        return [p for points in self.points.values() for p in points.values()]

    def delete(self, doc_id: str) -> None:
        self.keep.pop(doc_id, None)
        self.points.pop(doc_id, None)
        self.drop.add(doc_id)

    def upsert(self, point: Point) -> None:
        doc = point.parent_id
        self.drop.discard(doc)  # deleted earlier in the run: only this version's points stay
        if self.keep.get(doc) != point.version:
            self.keep[doc] = point.version
            self.points[doc] = {}
        self.points[doc][point.key] = point


def point_key(parent_id: str, chunk: int | None) -> str:
    return json.dumps([parent_id, chunk], ensure_ascii=False)


def plan(
    messages: Iterable[tuple[bytes | None, bytes | None]],
    model: tuple[str | None, int] | None = None,
) -> Plan:
    """The net effect of (key, value) output messages, in topic order. ``model`` is the index's
    (model, dimension); None (no index yet) takes the first vector's, and so does a model of None
    (an empty table) when the dimension fits."""
    out = Plan(model=model)
    for key, value in messages:
        try:
            _apply(out, key, value)
        except (ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
            out.skipped += 1
            log.warning(
                "skipping a message that is not an embedding event (%s: %s)",
                type(exc).__name__,
                str(exc)[:200],
            )
    return out


def _apply(out: Plan, key: bytes | None, value: bytes | None) -> None:
    if value is None:  # a tombstone: the key is the document id
        if key is None:
            raise ValueError("a tombstone without a key")
        out.delete(key.decode("utf-8", "surrogatepass"))
        return
    body = msgpack.unpackb(value, raw=False)
    if not isinstance(body, dict):
        raise TypeError("the value is not a map")
    if body["op"] == "delete":
        out.delete(body["id"])
        return
    if body["op"] != "upsert":
        raise ValueError(f"unknown op {body['op']!r}")
    # schema 1 had no chunks: the id is the document's (the cast: mypy reads this get of a
    # dict[Any, Any] with an Any default as Any | None)
    parent = cast(str, body.get("parent_id", body["id"]))
    chunk = body.get("chunk")
    vector = np.frombuffer(body["vector"], dtype=np.dtype(body["dtype"]).newbyteorder("<")).astype(
        np.float32
    )
    model = (body.get("model", ""), len(vector))
    if out.model is None or (out.model[0] is None and out.model[1] == model[1]):
        out.model = model  # an index with no vectors yet (or an empty table of this dimension) takes the first
    elif model != out.model:
        out.other_models[f"{model[0]} ({model[1]} dimensions)"] += 1
        return
    out.upsert(
        Point(
            key=point_key(parent, chunk),
            id=body["id"],
            parent_id=parent,
            version=int(body.get("version", body["source"]["offset"])),
            chunk=chunk,
            chunks=int(body.get("chunks", 1)),
            vector=vector,
            content_hash=body.get("content_hash", ""),
            model=body.get("model", ""),
            metadata=json.dumps(body.get("metadata"), ensure_ascii=False, default=repr),
        )
    )
