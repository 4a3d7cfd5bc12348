"""The pgvector store on its own, against a real PostgreSQL: what the sink's end-to-end tests do not
reach (values PostgreSQL refuses, a dropped connection, a search past HNSW's candidates, a table
named like a keyword)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import psycopg
import pytest

from loadgen.sinkbench import messages
from worker.sink.events import plan
from worker.sink.postgres import PostgresIndex, redacted

pytestmark = pytest.mark.integration


def _messages_with(n: int, dim: int, edit) -> list[tuple[bytes, bytes]]:
    import msgpack

    out = []
    for i, (_key, value) in enumerate(messages(n, dim)):
        body = msgpack.unpackb(value)
        edit(i, body)
        out.append(
            (body["id"].encode("utf-8", "surrogatepass"), msgpack.packb(body, use_bin_type=True))
        )
    return out


def test_a_value_postgresql_refuses_fails_its_document_alone(postgres_url):
    def edit(i, body):
        if i == 3:
            body["id"] = body["parent_id"] = "bad\x00id"  # text cannot hold NUL
        if i == 5:
            body["metadata"] = {
                "score": float("nan"),
                "note": "nul\x00here",
            }  # jsonb takes neither as they are

    index = PostgresIndex(postgres_url, "refusals", hnsw=False)
    index.apply(plan(_messages_with(10, 8, edit), index.model))
    assert index.take_refused() == 1 and index.count() == 9
    rows = {r["id"]: r for r in index.rows()}
    assert "bad\x00id" not in rows and json.loads(rows["doc-5"]["metadata"]) == {
        "score": None,
        "note": "nulhere",
    }
    index.drop()


def test_a_connection_the_database_dropped_is_opened_again(postgres_url):
    index = PostgresIndex(postgres_url, "reconnects", hnsw=False)
    msgs = messages(20, 8)
    index.apply(plan(msgs[:10], index.model))
    with psycopg.connect(
        postgres_url, autocommit=True
    ) as admin:  # what a restart or a failover does to it
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND datname = current_database()"
        )
    index.apply(plan(msgs[10:], index.model))
    assert index.count() == 20 == len(index.rows())
    index.drop()


def test_a_search_finds_k_documents_when_the_hnsw_index_runs_out_of_candidates(postgres_url):
    # 200 documents of 30 points each, every document's points close together: the nearest 1,000
    # points (the most HNSW returns) are those of ~33 documents; k=60 must still come back whole
    import msgpack

    from worker.consume.decode import decode_record, encode_document
    from worker.encode.base import ModelInfo
    from worker.publish import codec

    docs, chunks, dim, rng = 200, 30, 16, np.random.default_rng(1)
    info = ModelInfo("m", dim, "float32", "cpu", "mean", True, 16)
    centres = rng.standard_normal((docs, dim)).astype(np.float32)
    msgs = []
    for doc in range(docs):
        source = decode_record("t", 0, doc, 0, f"d{doc}".encode(), encode_document(f"d{doc}", "x"))
        for chunk in range(chunks):
            vector = centres[doc] + 0.01 * rng.standard_normal(dim).astype(np.float32)
            body = msgpack.unpackb(
                codec.vector_message(
                    source, vector / np.linalg.norm(vector), info, "float32", 0
                ).value
            )
            body.update(id=f"d{doc}#{chunk}", chunk=chunk, chunks=chunks)
            msgs.append((f"d{doc}".encode(), msgpack.packb(body, use_bin_type=True)))
    index = PostgresIndex(postgres_url, "order", hnsw=False)  # a keyword as a table name
    for i in range(0, len(msgs), 1000):
        index.apply(plan(msgs[i : i + 1000], index.model))
    with psycopg.connect(
        postgres_url, autocommit=True
    ) as admin:  # built after the load, as docs/index-updates.md advises
        admin.execute('CREATE INDEX ON "order" USING hnsw (embedding vector_cosine_ops)')
        admin.execute('ANALYZE "order"')
    assert index.count() == docs * chunks
    hits = index.search(centres[0], 60)
    assert len(hits) == 60 and len({h.document for h in hits}) == 60 and hits[0].document == "d0"
    assert all(a.score >= b.score for a, b in itertools.pairwise(hits))
    index.drop()


def test_the_url_is_never_shown_with_its_password():
    for url in (
        "postgresql://embed:s3cret@db:5432/app",
        "postgresql://embed@db/app?password=s3cret",
        "host=db user=embed password=s3cret dbname=app",
    ):
        shown = redacted(url)
        assert "s3cret" not in shown and "db" in shown
