"""The reference vector index: one LanceDB table on local disk (or any path LanceDB opens).

Why LanceDB: an embedded store (no server to run beside the sink) that persists every write as an
atomic, versioned commit of columnar files, so once ``apply`` returns, the write survives a crash
and the sink may commit its offsets; it upserts by key (``merge_insert``), deletes by predicate (a
document's points of other versions), and searches exactly (a flat scan) until an ANN index is
built. It is maintained (LanceDB, Apache-2.0) and reads from S3 or GCS with the same code.

One row per point: key (primary), id, parent_id, version, chunk, chunks, vector, content_hash,
model, metadata (JSON).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from worker.errors import IndexStoreError
from worker.sink.events import Plan

if TYPE_CHECKING:
    from lancedb.table import Table

log = logging.getLogger(__name__)
DELETE_CHUNK = 256  # documents per delete predicate


def sql_string(value: str) -> str:
    """A SQL string literal (quotes doubled) for a delete predicate."""
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True, slots=True)
class Hit:
    """One document of a query's answer: its best-matching point and that point's score (cosine)."""

    document: str
    score: float
    point: str
    chunk: int | None
    chunks: int
    metadata: Any


class Index:
    def __init__(self, path: str, table: str, *, create: bool = True) -> None:
        try:
            import lancedb  # heavy import, kept off the CLI's --help path
        except ImportError:
            raise IndexStoreError(
                "the index needs LanceDB: pip install 'embedfleet[sink]'"
            ) from None

        if not create and not Path(path).exists() and "://" not in path:
            raise IndexStoreError(
                f"no index at {path!r} (EMBED_SINK__PATH): run `embed-worker sink` first"
            )
        self._db = lancedb.connect(path)
        self._name = table
        self._model: tuple[str | None, int] | None = None  # kept once a model is known
        self.path = path
        self._table: Table | None
        try:
            self._table = self._db.open_table(table)
        except ValueError:  # not created yet: the first write creates it
            self._table = None
        if self._table is None and not create:
            raise IndexStoreError(
                f"the index at {path!r} has no table {table!r} (EMBED_SINK__TABLE): nothing was written to it yet"
            )

    @property
    def dim(self) -> int | None:
        if self._table is None:
            return None
        return self._table.schema.field("vector").type.list_size

    @property
    def model(self) -> tuple[str | None, int] | None:
        """(model, dimension) of the vectors this index holds: its first write decides, and vectors
        of any other are left out (``events.plan``). None before the table exists; (None, its
        dimension) while the table exists but is empty (every document deleted): the table's
        dimension is fixed, the model is whichever comes next."""
        if self._model is None and self._table is not None:
            dim = self.dim
            assert dim is not None  # the table exists
            if not self.count():
                return (None, dim)
            (row,) = self._table.search().select(["model"]).limit(1).to_list()
            self._model = (row["model"], dim)
        return self._model

    def count(self) -> int:
        return self._table.count_rows() if self._table is not None else 0

    def apply(self, plan: Plan) -> None:
        """Delete what the plan drops (whole documents, and other versions of those it keeps), then
        upsert its points. Each step is one committed write; a replay redoes both to the same end."""
        if self._table is not None:
            for predicate in _delete_predicates(plan):
                self._table.delete(predicate)
        points = plan.upserts
        if not points:
            return
        dim = len(points[0].vector)
        if self.dim not in (None, dim) or any(len(p.vector) != dim for p in points):
            raise IndexStoreError(
                f"vectors of {dim} dimensions do not fit the index at {self.path!r} ({self.dim}); use a new EMBED_SINK__PATH for a new model"
            )
        data = _arrow(points, dim)
        if self._table is None:
            self._table = self._db.create_table(self._name, data=data)
        else:
            self._table.merge_insert(
                "key"
            ).when_matched_update_all().when_not_matched_insert_all().execute(data)
        if self._model is None and plan.model is not None and plan.model[0] is not None:
            self._model = plan.model

    def compact(self) -> None:
        if self._table is not None:
            self._table.optimize()

    def take_refused(self) -> int:
        """Points the store refused since the last call: LanceDB takes every value."""
        return 0

    def other_model(self, model: str) -> str | None:
        """A model other than ``model`` that some point was embedded with, if any."""
        if self._table is None:
            return None
        found = (
            self._table.search()
            .where(f"model <> {sql_string(model)}")
            .select(["model"])
            .limit(1)
            .to_list()
        )
        return found[0]["model"] if found else None

    def rows(self) -> list[dict[str, Any]]:
        """Every point, vectors as float32 arrays (for tests and small indexes)."""
        if self._table is None:
            return []
        rows = self._table.to_arrow().to_pylist()
        for r in rows:
            r["vector"] = np.asarray(r["vector"], dtype=np.float32)
        return rows

    def search(self, vector: np.ndarray, k: int) -> list[Hit]:
        """The ``k`` documents with the best-matching points, best first (chunks of one document count once)."""
        total = self.count()
        limit = min(max(4 * k, 16), total)
        table = self._table  # None only while the index is empty: then limit is 0
        while True:
            found = (
                table.search(np.asarray(vector, dtype=np.float32))
                .distance_type("cosine")  # type: ignore[attr-defined]  # lancedb types Table.search() as the base builder; a vector query returns LanceVectorQueryBuilder, which has it
                .limit(limit)
                .to_list()
                if limit and table is not None
                else []
            )
            best: dict[str, Hit] = {}
            for r in found:  # nearest first: the first point of each document is its best
                if r["parent_id"] not in best:
                    best[r["parent_id"]] = Hit(
                        r["parent_id"],
                        1.0 - float(r["_distance"]),
                        r["id"],
                        r["chunk"],
                        r["chunks"],
                        json.loads(r["metadata"]),
                    )
            if len(best) >= k or limit >= total:
                return list(best.values())[:k]
            limit = min(limit * 4, total)


def _delete_predicates(plan: Plan) -> list[str]:
    clauses = [
        f"(parent_id = {sql_string(doc)} AND version <> {int(v)})" for doc, v in plan.keep.items()
    ]
    dropped = sorted(plan.drop)
    for i in range(0, len(dropped), DELETE_CHUNK):
        clauses.append(
            f"parent_id IN ({', '.join(sql_string(d) for d in dropped[i : i + DELETE_CHUNK])})"
        )
    return [
        " OR ".join(clauses[i : i + DELETE_CHUNK]) for i in range(0, len(clauses), DELETE_CHUNK)
    ]


def _arrow(points, dim: int):
    import pyarrow as pa

    columns = {
        name: [getattr(p, name) for p in points]
        for name in (
            "key",
            "id",
            "parent_id",
            "version",
            "chunk",
            "chunks",
            "content_hash",
            "model",
            "metadata",
        )
    }
    vectors = np.stack([p.vector for p in points]).astype(np.float32).ravel()
    schema = pa.schema(
        [
            ("key", pa.string()),
            ("id", pa.string()),
            ("parent_id", pa.string()),
            ("version", pa.int64()),
            ("chunk", pa.int32()),
            ("chunks", pa.int32()),
            ("content_hash", pa.string()),
            ("model", pa.string()),
            ("metadata", pa.string()),
            ("vector", pa.list_(pa.float32(), dim)),
        ]
    )
    arrays = [pa.array(columns[f.name], type=f.type) for f in schema if f.name != "vector"]
    arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(vectors, type=pa.float32()), dim))
    return pa.Table.from_arrays(arrays, schema=schema)


def open_index(settings: Any, *, create: bool = True):
    """The index the sink settings name (``EMBED_SINK__STORE``): LanceDB at ``path``, or a
    PostgreSQL table (``worker.sink.postgres``) at ``postgres_url``."""
    if settings.store == "postgres":
        from worker.sink.postgres import PostgresIndex

        return PostgresIndex(
            settings.postgres_url.get_secret_value(),
            settings.table,
            create=create,
            hnsw=settings.hnsw,
        )
    return Index(settings.path, settings.table, create=create)
