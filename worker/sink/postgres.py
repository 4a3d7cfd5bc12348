"""The index in PostgreSQL with pgvector (``EMBED_SINK__STORE=postgres``): the same rows, plans and
guarantees as the LanceDB index, in the database a user already runs.

One table, created if missing (``CREATE EXTENSION vector`` too, where the role may), with the
model's dimension, a B-tree index on the document and an HNSW index for cosine distance:

    key text primary key, id text, parent_id text, version bigint, chunk int, chunks int,
    content_hash text, model text, metadata jsonb, embedding vector(dim)

``apply`` writes a plan in one transaction: its deletes (documents dropped, other versions of those
kept), then its points, loaded with a binary ``COPY`` into a temporary table and upserted by key
from there (``INSERT ... ON CONFLICT (key) DO UPDATE``): no row-by-row INSERT. When it returns, the
transaction has committed, so the sink may commit its offsets; a replay writes the same rows again.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from worker.errors import IndexStoreError
from worker.sink.events import Plan
from worker.sink.index import Hit

log = logging.getLogger(__name__)
COLUMNS = ("key", "id", "parent_id", "version", "chunk", "chunks", "content_hash", "model", "metadata")
COPY_TYPES = ("text", "text", "text", "int8", "int4", "int4", "text", "text", "text", "vector")  # metadata: JSON text, cast once in SQL


def redacted(url: str) -> str:
    """The URL without its password, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


class PostgresIndex:
    """``sink.index.Index``'s interface over a PostgreSQL table."""

    def __init__(self, url: str, table: str, *, create: bool = True, hnsw: bool = True) -> None:
        try:
            import psycopg
            from pgvector.psycopg import register_vector
        except ImportError:
            raise IndexStoreError("the PostgreSQL index needs psycopg and pgvector: pip install 'embedfleet[sink]'") from None
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", table):
            raise IndexStoreError(f"invalid setting EMBED_SINK__TABLE: {table!r} is not a plain PostgreSQL table name (letters, digits, _)")
        self.path = redacted(url)
        self._table = table
        self._hnsw = hnsw
        self._model: tuple[str, int] | None = None
        try:
            self._conn = psycopg.connect(url, autocommit=False)
        except psycopg.Error as exc:
            raise IndexStoreError(f"cannot connect to PostgreSQL at {self.path} (EMBED_SINK__POSTGRES_URL): {str(exc).strip()}") from None
        with self._conn.transaction():
            has_vector = self._conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone()
            if not has_vector and create:
                try:
                    self._conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                except psycopg.Error as exc:
                    raise IndexStoreError(f"PostgreSQL at {self.path} has no pgvector and this role cannot create it: {str(exc).strip()}") from None
        register_vector(self._conn)
        self._dim = self._column_dim()
        if self._dim is None and not create:
            raise IndexStoreError(f"PostgreSQL at {self.path} has no table {table!r} (EMBED_SINK__TABLE): nothing was written to it yet")

    def _column_dim(self) -> int | None:
        row = self._conn.execute(
            "SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = 'embedding' AND NOT attisdropped", (self._table,)
        ).fetchone()
        self._conn.commit()
        return int(row[0]) if row else None

    @property
    def dim(self) -> int | None:
        return self._dim

    @property
    def model(self) -> tuple[str | None, int] | None:
        """As ``Index.model``: (model, dimension) of what the table holds, (None, dimension) when
        it is empty, None before it exists."""
        if self._model is None and self._dim is not None:
            row = self._conn.execute(f"SELECT model FROM {self._table} LIMIT 1").fetchone()
            self._conn.commit()
            if row is None:
                return (None, self._dim)
            self._model = (row[0], self._dim)
        return self._model

    def count(self) -> int:
        if self._dim is None:
            return 0
        (n,) = self._conn.execute(f"SELECT count(*) FROM {self._table}").fetchone()
        self._conn.commit()
        return int(n)

    def _create(self, dim: int) -> None:
        t = self._table
        self._conn.execute(
            f"CREATE TABLE IF NOT EXISTS {t} (key text PRIMARY KEY, id text NOT NULL, parent_id text NOT NULL, version bigint NOT NULL, "
            f"chunk integer, chunks integer NOT NULL, content_hash text, model text NOT NULL, metadata jsonb, embedding vector({dim}) NOT NULL)"
        )
        self._conn.execute(f"CREATE INDEX IF NOT EXISTS {t}_parent_id ON {t} (parent_id)")
        if self._hnsw:
            self._conn.execute(f"CREATE INDEX IF NOT EXISTS {t}_embedding_hnsw ON {t} USING hnsw (embedding vector_cosine_ops)")
        self._dim = dim

    def apply(self, plan: Plan) -> None:
        """The plan's deletes, then its upserts, in one transaction."""
        import psycopg

        points = plan.upserts
        dim = len(points[0].vector) if points else None
        if dim is not None and (self._dim not in (None, dim) or any(len(p.vector) != dim for p in points)):
            raise IndexStoreError(f"vectors of {dim} dimensions do not fit the table {self._table} at {self.path} ({self._dim}); use a new EMBED_SINK__TABLE for a new model")
        t = self._table
        try:
            with self._conn.transaction():
                if self._dim is None and dim is not None:
                    self._create(dim)
                if self._dim is not None:
                    if plan.drop:
                        self._conn.execute(f"DELETE FROM {t} WHERE parent_id = ANY(%s)", (sorted(plan.drop),))
                    if plan.keep:
                        docs, versions = zip(*plan.keep.items())
                        self._conn.execute(
                            f"DELETE FROM {t} USING unnest(%s::text[], %s::bigint[]) AS k(doc, version) WHERE {t}.parent_id = k.doc AND {t}.version <> k.version",
                            (list(docs), list(versions)),
                        )
                if points:
                    self._upsert(points)
        except psycopg.Error as exc:
            raise IndexStoreError(f"PostgreSQL at {self.path} refused a write to {t}: {str(exc).strip()}") from None
        if self._model is None and plan.model is not None and plan.model[0] is not None:
            self._model = plan.model

    def _upsert(self, points) -> None:
        t = self._table
        self._conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {t}_load (key text, id text, parent_id text, version bigint, chunk integer, chunks integer, "
            "content_hash text, model text, metadata text, embedding vector) ON COMMIT DELETE ROWS"
        )
        with self._conn.cursor().copy(f"COPY {t}_load ({', '.join(COLUMNS)}, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(COPY_TYPES)
            for p in points:
                copy.write_row((p.key, p.id, p.parent_id, p.version, p.chunk, p.chunks, p.content_hash, p.model, p.metadata, np.asarray(p.vector, dtype=np.float32)))
        updates = ", ".join(f"{c} = excluded.{c}" for c in (*COLUMNS[1:], "embedding"))
        self._conn.execute(
            f"INSERT INTO {t} ({', '.join(COLUMNS)}, embedding) SELECT key, id, parent_id, version, chunk, chunks, content_hash, model, "
            f"metadata::jsonb, embedding FROM {t}_load ON CONFLICT (key) DO UPDATE SET {updates}"
        )

    def compact(self) -> None:
        """Let PostgreSQL's autovacuum do it; nothing to do here."""

    def other_model(self, model: str) -> str | None:
        if self._dim is None:
            return None
        row = self._conn.execute(f"SELECT model FROM {self._table} WHERE model <> %s LIMIT 1", (model,)).fetchone()
        self._conn.commit()
        return row[0] if row else None

    def rows(self) -> list[dict[str, Any]]:
        if self._dim is None:
            return []
        cur = self._conn.execute(f"SELECT {', '.join(COLUMNS)}, embedding FROM {self._table}")
        out = []
        for values in cur.fetchall():
            row = dict(zip((*COLUMNS, "vector"), values))
            row["metadata"] = json.dumps(row["metadata"]) if row["metadata"] is not None else "null"
            vector = row["vector"]  # pgvector's Vector (a binary result) or an array
            row["vector"] = np.asarray(vector.to_numpy() if hasattr(vector, "to_numpy") else vector, dtype=np.float32)
            out.append(row)
        self._conn.commit()
        return out

    def search(self, vector: np.ndarray, k: int) -> list[Hit]:
        """As ``Index.search``: the ``k`` documents with the best-matching points (cosine), each once."""
        total = self.count()
        limit = min(max(4 * k, 16), total)
        query = np.asarray(vector, dtype=np.float32)
        while True:
            best: dict[str, Hit] = {}
            if limit:
                with self._conn.transaction():
                    self._conn.execute(f"SET LOCAL hnsw.ef_search = {max(40, min(limit, 1000))}")
                    found = self._conn.execute(
                        f"SELECT parent_id, id, chunk, chunks, metadata, embedding <=> %s AS distance FROM {self._table} ORDER BY embedding <=> %s LIMIT %s",
                        (query, query, limit),
                    ).fetchall()
                for parent, point, chunk, chunks, metadata, distance in found:  # nearest first
                    if parent not in best:
                        best[parent] = Hit(parent, 1.0 - float(distance), point, chunk, chunks, metadata)
            if len(best) >= k or limit >= total:
                return list(best.values())[:k]
            limit = min(limit * 4, total)

    def drop(self) -> None:
        """Drop the table (benchmarks and tests)."""
        with self._conn.transaction():
            self._conn.execute(f"DROP TABLE IF EXISTS {self._table}")
        self._dim, self._model = None, None

    def close(self) -> None:
        self._conn.close()
