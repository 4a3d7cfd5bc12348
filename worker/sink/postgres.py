"""The index in PostgreSQL with pgvector (``EMBED_SINK__STORE=postgres``): the same rows, plans and
guarantees as the LanceDB index, in the database a user already runs.

One table, created if missing (``CREATE EXTENSION vector`` too, where the role may), with the
model's dimension, a B-tree index on the document and an HNSW index for cosine distance (up to
pgvector's 2,000 dimensions):

    key text primary key, id text, parent_id text, version bigint, chunk int, chunks int,
    content_hash text, model text, metadata jsonb, embedding vector(dim)

``apply`` writes a plan in one transaction: its deletes (documents dropped, other versions of those
kept), then its points, loaded with a binary ``COPY`` into a temporary table and upserted by key
from there (``INSERT ... ON CONFLICT (key) DO UPDATE``): no row-by-row INSERT. When it returns, the
transaction has committed, so the sink may commit its offsets; a replay writes the same rows again.
Reads run outside transactions (autocommit), so a failed read leaves nothing open. A connection
the database dropped (a restart, a failover) is opened again once per call. A value PostgreSQL
refuses (a NUL byte in an id) fails its own document only: the plan is applied again document by
document and the refused ones are counted (``take_refused``), logged, and left out.
"""

from __future__ import annotations

import json
import logging
import math
import re
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from worker.errors import IndexStoreError
from worker.sink.events import Plan
from worker.sink.index import Hit

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)
COLUMNS = (
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
COPY_TYPES = (
    "text",
    "text",
    "text",
    "int8",
    "int4",
    "int4",
    "text",
    "text",
    "text",
    "vector",
)  # metadata: JSON text, cast once in SQL
TABLE_NAME = re.compile(
    r"[a-z_][a-z0-9_]{0,47}"
)  # room for the suffixes of its indexes and staging table in 63
HNSW_MAX_DIM = 2000  # pgvector's limit for an HNSW index on vector


def redacted(url: str) -> str:
    """Where the index is, for logs and messages: host, port, database and user, never a password."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        parts = conninfo_to_dict(url)
    except Exception:  # not parseable: say nothing of it
        return "postgresql (unparseable EMBED_SINK__POSTGRES_URL)"
    host = parts.get("host") or "localhost"
    return f"postgresql://{parts.get('user') or ''}@{host}:{parts.get('port') or 5432}/{parts.get('dbname') or ''}"


def _clean(value: Any) -> Any:
    """JSON metadata PostgreSQL's jsonb accepts: NaN and infinities become null, NUL bytes go."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_clean(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _metadata_json(text: str) -> str:
    if "NaN" not in text and "Infinity" not in text and "\\u0000" not in text:
        return text  # the common case: already what jsonb takes
    return json.dumps(_clean(json.loads(text)), ensure_ascii=False)


class _Refused(IndexStoreError):
    """PostgreSQL refused a value (``psycopg.DataError``): the document's, not the connection's fault."""


class PostgresIndex:
    """``sink.index.Index``'s interface over a PostgreSQL table."""

    def __init__(self, url: str, table: str, *, create: bool = True, hnsw: bool = True) -> None:
        try:
            import pgvector.psycopg  # noqa: F401
            import psycopg  # noqa: F401
        except ImportError:
            raise IndexStoreError(
                "the PostgreSQL index needs psycopg and pgvector: pip install 'embedfleet[sink]'"
            ) from None
        if not TABLE_NAME.fullmatch(table):
            raise IndexStoreError(
                f"invalid setting EMBED_SINK__TABLE: {table!r} is not a PostgreSQL table name of at most 48 lower-case letters, digits and _"
            )
        self._url = url
        self.path = redacted(url)
        self._table = table
        self._q = f'"{table}"'  # quoted: a reserved word (order, user) is a name like any other
        self._hnsw = hnsw
        self._create_ok = create
        self._model: tuple[str | None, int] | None = None  # kept once a model is known
        self._refused = 0
        self._conn: psycopg.Connection[Any] = self._open()
        self._dim = self._column_dim()
        if self._dim is None and not create:
            raise IndexStoreError(
                f"PostgreSQL at {self.path} has no table {table!r} (EMBED_SINK__TABLE): nothing was written to it yet"
            )
        self._count = self._exact_count()

    # -- connection ------------------------------------------------------------------------------

    def _connect(self) -> None:
        """Open the connection again (the database dropped it); the old one is closed."""
        conn = self._open()
        self._conn.close()
        self._conn = conn

    def _open(self) -> psycopg.Connection[Any]:
        import psycopg
        from pgvector.psycopg import register_vector

        try:
            conn = psycopg.connect(self._url, autocommit=True, connect_timeout=10, keepalives=1)
        except psycopg.Error as exc:
            raise IndexStoreError(
                f"cannot connect to PostgreSQL at {self.path} (EMBED_SINK__POSTGRES_URL): {str(exc).strip()}"
            ) from None
        try:
            if not conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
                if not self._create_ok:
                    raise IndexStoreError(
                        f"PostgreSQL at {self.path} has no pgvector extension: nothing was written to it yet"
                    )
                try:
                    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                except psycopg.Error as exc:
                    raise IndexStoreError(
                        f"PostgreSQL at {self.path} has no pgvector and this role cannot create it: {str(exc).strip()}"
                    ) from None
            register_vector(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _run(self, what: str, fn):
        """``fn()``, opening the connection again once if the database dropped it; any other
        database error is an ``IndexStoreError`` naming ``what``."""
        import psycopg

        for attempt in (1, 2):
            try:
                return fn()
            except psycopg.DataError as exc:
                raise _Refused(
                    f"PostgreSQL at {self.path}: {what} refused a value: {str(exc).strip()}"
                ) from None
            except psycopg.OperationalError as exc:
                if attempt == 2 or not (self._conn.closed or self._conn.broken):
                    raise IndexStoreError(
                        f"PostgreSQL at {self.path}: {what} failed: {str(exc).strip()}"
                    ) from None
                log.warning(
                    "sink: PostgreSQL at %s dropped the connection (%s); connecting again",
                    self.path,
                    str(exc).strip(),
                )
                self._connect()
            except psycopg.Error as exc:
                raise IndexStoreError(
                    f"PostgreSQL at {self.path}: {what} failed: {str(exc).strip()}"
                ) from None

    # -- reads -----------------------------------------------------------------------------------

    def _column_dim(self) -> int | None:
        row = self._run(
            "reading the table",
            lambda: self._conn.execute(
                "SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = 'embedding' AND NOT attisdropped",
                (self._q,),
            ).fetchone(),
        )
        if row is None:
            return None
        if int(row[0]) <= 0:
            raise IndexStoreError(
                f"the table {self._table} at {self.path} has an embedding column without a dimension: create it as vector(n), or let the sink create it"
            )
        return int(row[0])

    def _exact_count(self) -> int:
        if self._dim is None:
            return 0
        row = self._run(  # count(*) always returns its one row
            "counting", lambda: self._conn.execute(f"SELECT count(*) FROM {self._q}").fetchone()
        )
        return int(row[0])

    @property
    def dim(self) -> int | None:
        return self._dim

    @property
    def model(self) -> tuple[str | None, int] | None:
        """As ``Index.model``: (model, dimension) of what the table holds, (None, dimension) when
        it is empty, None before it exists."""
        if self._dim is None:
            self._dim = self._column_dim()  # another writer may have created it since
        if self._model is None and self._dim is not None:
            row = self._run(
                "reading the model",
                lambda: self._conn.execute(f"SELECT model FROM {self._q} LIMIT 1").fetchone(),
            )
            if row is None:
                return (None, self._dim)
            self._model = (row[0], self._dim)
        return self._model

    def count(self) -> int:
        """Points in the table: counted once at open, then kept by the writes (no scan per poll)."""
        return self._count

    def take_refused(self) -> int:
        """Points refused by PostgreSQL since the last call (left out, logged)."""
        n, self._refused = self._refused, 0
        return n

    # -- writes ----------------------------------------------------------------------------------

    def apply(self, plan: Plan) -> None:
        """The plan's deletes, then its upserts, in one transaction; a value PostgreSQL refuses
        fails only its own document (the plan is applied again document by document)."""
        points = plan.upserts
        dim = len(points[0].vector) if points else None
        if self._dim is None:
            self._dim = self._column_dim()
        if dim is not None and (
            self._dim not in (None, dim) or any(len(p.vector) != dim for p in points)
        ):
            raise IndexStoreError(
                f"vectors of {dim} dimensions do not fit the table {self._table} at {self.path} ({self._dim}); use a new EMBED_SINK__TABLE for a new model"
            )
        try:
            self._count += self._run(
                "a write", lambda: self._write(plan.drop, plan.keep, points, dim)
            )
        except _Refused:
            self._apply_each(plan, dim)
        if self._model is None and plan.model is not None and plan.model[0] is not None:
            self._model = plan.model

    def _apply_each(self, plan: Plan, dim: int | None) -> None:
        docs = sorted(set(plan.drop) | set(plan.keep) | set(plan.points))
        for doc in docs:
            keep = {doc: plan.keep[doc]} if doc in plan.keep else {}
            points = list(plan.points.get(doc, {}).values())
            try:
                self._count += self._run(
                    "a write", partial(self._write, {doc} & plan.drop, keep, points, dim)
                )
            except _Refused as exc:
                self._refused += max(1, len(points))
                log.warning(
                    "sink: PostgreSQL refused document %r (%d points), left out: %s",
                    doc[:80],
                    len(points),
                    exc,
                )

    def _write(self, drop, keep: dict[str, int], points, dim: int | None) -> int:
        """One transaction; returns how the table's row count changed."""
        q = self._q
        change = 0
        with self._conn.transaction():
            if self._dim is None and dim is not None:
                self._create(dim)
            if self._dim is not None:
                if drop:
                    change -= self._conn.execute(
                        f"DELETE FROM {q} WHERE parent_id = ANY(%s)", (sorted(drop),)
                    ).rowcount
                if keep:
                    docs, versions = zip(*sorted(keep.items()))
                    change -= self._conn.execute(
                        f"DELETE FROM {q} USING unnest(%s::text[], %s::bigint[]) AS k(doc, version) WHERE {q}.parent_id = k.doc AND {q}.version <> k.version",
                        (list(docs), list(versions)),
                    ).rowcount
            if points:
                change += self._upsert(points)
        if self._dim is None and dim is not None:
            self._dim = dim  # the table exists: its transaction committed
        return change

    def _create(self, dim: int) -> None:
        q, t = self._q, self._table
        self._conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", (t,)
        )  # two sinks creating one table: one at a time
        self._conn.execute(
            f"CREATE TABLE IF NOT EXISTS {q} (key text PRIMARY KEY, id text NOT NULL, parent_id text NOT NULL, version bigint NOT NULL, "
            f"chunk integer, chunks integer NOT NULL, content_hash text, model text NOT NULL, metadata jsonb, embedding vector({dim}) NOT NULL)"
        )
        self._conn.execute(f'CREATE INDEX IF NOT EXISTS "{t}_parent_id" ON {q} (parent_id)')
        if self._hnsw and dim <= HNSW_MAX_DIM:
            self._conn.execute(
                f'CREATE INDEX IF NOT EXISTS "{t}_embedding_hnsw" ON {q} USING hnsw (embedding vector_cosine_ops)'
            )
        elif self._hnsw:
            log.warning(
                "sink: %d dimensions exceed pgvector's %d for an HNSW index: the table %s is searched exactly",
                dim,
                HNSW_MAX_DIM,
                t,
            )

    def _upsert(self, points) -> int:
        """Points by binary COPY into a staging table, then one upsert; returns the rows inserted."""
        q, stage = self._q, f'"{self._table}_load"'
        self._conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} (key text, id text, parent_id text, version bigint, chunk integer, chunks integer, "
            "content_hash text, model text, metadata text, embedding vector) ON COMMIT DELETE ROWS"
        )
        with self._conn.cursor().copy(
            f"COPY {stage} ({', '.join(COLUMNS)}, embedding) FROM STDIN WITH (FORMAT BINARY)"
        ) as copy:
            copy.set_types(COPY_TYPES)
            for p in points:
                copy.write_row(
                    (
                        p.key,
                        p.id,
                        p.parent_id,
                        p.version,
                        p.chunk,
                        p.chunks,
                        p.content_hash,
                        p.model,
                        _metadata_json(p.metadata),
                        np.asarray(p.vector, dtype=np.float32),
                    )
                )
        updates = ", ".join(f"{c} = excluded.{c}" for c in (*COLUMNS[1:], "embedding"))
        inserted = self._conn.execute(
            f"INSERT INTO {q} ({', '.join(COLUMNS)}, embedding) SELECT key, id, parent_id, version, chunk, chunks, content_hash, model, "
            f"metadata::jsonb, embedding FROM {stage} ORDER BY key ON CONFLICT (key) DO UPDATE SET {updates} RETURNING (xmax = 0)"
        ).fetchall()
        return sum(1 for (new,) in inserted if new)

    def compact(self) -> None:
        """Let PostgreSQL's autovacuum do it; nothing to do here."""

    # -- queries ---------------------------------------------------------------------------------

    def other_model(self, model: str) -> str | None:
        if self._dim is None:
            return None
        row = self._run(
            "reading the models",
            lambda: self._conn.execute(
                f"SELECT model FROM {self._q} WHERE model <> %s LIMIT 1", (model,)
            ).fetchone(),
        )
        return row[0] if row else None

    def rows(self) -> list[dict[str, Any]]:
        if self._dim is None:
            return []
        found = self._run(
            "reading the rows",
            lambda: self._conn.execute(
                f"SELECT {', '.join(COLUMNS)}, embedding FROM {self._q}"
            ).fetchall(),
        )
        out = []
        for values in found:
            row = dict(zip((*COLUMNS, "vector"), values))
            row["metadata"] = json.dumps(row["metadata"]) if row["metadata"] is not None else "null"
            vector = row["vector"]  # pgvector's Vector (a binary result) or an array
            row["vector"] = np.asarray(
                vector.to_numpy() if hasattr(vector, "to_numpy") else vector, dtype=np.float32
            )
            out.append(row)
        return out

    def search(self, vector: np.ndarray, k: int) -> list[Hit]:
        """As ``Index.search``: the ``k`` documents with the best-matching points (cosine), each
        once. The HNSW index returns at most ``hnsw.ef_search`` rows; when that is short of what
        is asked, the scan is exact."""
        total = self.count()
        limit = min(max(4 * k, 16), total)
        query = np.asarray(vector, dtype=np.float32)
        exact = False
        while True:
            best: dict[str, Hit] = {}
            found = (
                self._run("a search", partial(self._search, query, limit, exact)) if limit else []
            )
            for parent, point, chunk, chunks, metadata, distance in found:  # nearest first
                if parent not in best:
                    best[parent] = Hit(
                        parent, 1.0 - float(distance), point, chunk, chunks, metadata
                    )
            if len(best) >= k or (limit >= total and (exact or len(found) >= limit)):
                return list(best.values())[:k]
            if len(found) < limit:
                exact = True  # the ANN index ran out of candidates
            limit = min(limit * 4, total)

    def _search(self, query: np.ndarray, limit: int, exact: bool) -> list:
        with self._conn.transaction():
            if exact:
                self._conn.execute("SET LOCAL enable_indexscan = off")
            else:
                self._conn.execute(f"SET LOCAL hnsw.ef_search = {max(40, min(limit, 1000))}")
            return self._conn.execute(
                f"SELECT parent_id, id, chunk, chunks, metadata, embedding <=> %s AS distance FROM {self._q} ORDER BY embedding <=> %s LIMIT %s",
                (query, query, limit),
            ).fetchall()

    def drop(self) -> None:
        """Drop the table (benchmarks and tests)."""
        self._run(
            "dropping the table", lambda: self._conn.execute(f"DROP TABLE IF EXISTS {self._q}")
        )
        self._dim, self._model, self._count = None, None, 0

    def close(self) -> None:
        self._conn.close()
