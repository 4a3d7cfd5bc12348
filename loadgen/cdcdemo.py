"""``embed-loadgen cdc``: a PostgreSQL table followed into a pgvector index through Kafka.

The walk-through of change data capture on the local stack: a table ``articles`` of the sample
corpus in the local PostgreSQL; its rows published as Debezium's snapshot events; one worker
(``EMBED_INPUT__FORMAT=debezium``) and the PostgreSQL sink; then updates, deletes and inserts in the
table, each published as the change event Debezium would capture for it (``loadgen.cdc``: no
Kafka Connect runs here, so this publisher stands in for it, reading the changed rows back with
``RETURNING``); the worker and the sink again; and a check that the index holds exactly the table's
live rows, each one point carrying the content hash of its latest text (the template over the row).
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass

from loadgen.cdc import TEMPLATE, DebeziumEncoder, with_tombstones

COLUMNS = ("id", "title", "body", "lang")


def _doc(row: tuple) -> dict:
    row_id, title, body, lang = row
    return {"id": row_id, "text": body, "metadata": {"title": title, "lang": lang}}


@dataclass
class Articles:
    """The source table: ``id text primary key, title, body, lang`` (psycopg, autocommit)."""

    url: str
    name: str

    def __post_init__(self) -> None:
        import psycopg

        self._conn = psycopg.connect(self.url, autocommit=True)
        self._conn.execute(f"DROP TABLE IF EXISTS {self.name}")
        self._conn.execute(
            f"CREATE TABLE {self.name} (id text PRIMARY KEY, title text, body text NOT NULL, lang text)"
        )

    def load(self, docs: list[dict]) -> None:
        with self._conn.cursor().copy(
            f"COPY {self.name} ({', '.join(COLUMNS)}) FROM STDIN"
        ) as copy:
            for d in docs:
                copy.write_row(
                    (d["id"], d["id"].rsplit("/", 1)[-1].replace("_", " "), d["text"], "en")
                )

    def snapshot(self) -> list[dict]:
        """Every row, as Debezium's initial snapshot reads them (op r)."""
        rows = self._conn.execute(
            f"SELECT {', '.join(COLUMNS)} FROM {self.name} ORDER BY id"
        ).fetchall()
        return [{**_doc(r), "debezium_op": "r"} for r in rows]

    def update(self, ids: list[str], note: str) -> list[dict]:
        rows = self._conn.execute(
            f"UPDATE {self.name} SET body = body || %s WHERE id = ANY(%s) RETURNING {', '.join(COLUMNS)}",
            (note, ids),
        ).fetchall()
        return [{**_doc(r), "debezium_op": "u"} for r in rows]

    def delete(self, ids: list[str]) -> list[dict]:
        rows = self._conn.execute(
            f"DELETE FROM {self.name} WHERE id = ANY(%s) RETURNING id", (ids,)
        ).fetchall()
        return with_tombstones([{"id": r[0], "op": "delete"} for r in rows])

    def insert(self, docs: list[dict]) -> list[dict]:
        out = []
        for d in docs:
            row = self._conn.execute(
                f"INSERT INTO {self.name} VALUES (%s, %s, %s, %s) RETURNING {', '.join(COLUMNS)}",
                (d["id"], None, d["text"], "en"),
            ).fetchone()
            assert row is not None  # INSERT ... RETURNING returns the row it inserted
            out.append({**_doc(row), "debezium_op": "c"})
        return out

    def live(self) -> dict[str, str]:
        """id → the text the worker should have embedded (the template over the row)."""
        from worker.consume.formats import Template

        template = Template(TEMPLATE)
        rows = self._conn.execute(f"SELECT {', '.join(COLUMNS)} FROM {self.name}").fetchall()
        live: dict[str, str] = {}
        for r in rows:
            text = template.render(dict(zip(COLUMNS, r)))[0]
            if text is not None:  # no text (never here: every row has a body): no point either
                live[r[0]] = text
        return live

    def close(self) -> None:
        self._conn.close()


def run_cdc(state_dir: str, docs: int = 300, *, log=print) -> dict:
    from loadgen.corpus import sample_corpus
    from loadgen.publish import TopicSender, publish
    from worker.config import KafkaSettings
    from worker.consume.decode import content_hash
    from worker.sink.postgres import PostgresIndex
    from worker.stack.devstack import LocalRun, StackError

    run = LocalRun.start("cdc", state_dir)
    url = run.addresses.postgres_url
    if not url:
        raise StackError(
            "the local stack has no PostgreSQL: pip install pgserver (the local extra), then embed-worker devstack down and up"
        )
    suffix = run.name.replace("-", "_").replace(".", "_")
    corpus = sample_corpus(docs + docs // 10)
    table = Articles(url, f"articles_{suffix}")
    table.load(corpus[:docs])
    encode = DebeziumEncoder(schema=True)
    sender = TopicSender(KafkaSettings(bootstrap_servers=run.addresses.kafka))
    worker_env = {
        "EMBED_INPUT__FORMAT": "debezium",
        "EMBED_INPUT__TEXT_TEMPLATE": TEMPLATE,
        "EMBED_INPUT__METADATA_FIELDS": "lang",
        "EMBED_LONG_TEXT__POLICY": "truncate",
    }  # one point a row, whatever the caller's environment says
    sink_env = {
        "EMBED_SINK__STORE": "postgres",
        "EMBED_SINK__POSTGRES_URL": url,
        "EMBED_SINK__TABLE": f"index_{suffix}",
        "EMBED_SINK__GROUP_ID": f"{run.name}-sink",
    }
    result: dict = {
        "run": run.name,
        "table": table.name,
        "index_table": sink_env["EMBED_SINK__TABLE"],
    }
    try:
        snapshot = table.snapshot()
        log(
            f"==> {len(snapshot)} rows of {table.name} published as Debezium snapshot events (op r) to {run.input_topic}"
        )
        publish(sender, run.input_topic, snapshot, encode=encode)
        log(
            "==> embed-worker run (EMBED_INPUT__FORMAT=debezium), then embed-worker sink --store postgres"
        )
        result["first"] = run.run_worker(idle_s=3, quiet=True, **worker_env)
        result["first_sink"] = run.run_worker(idle_s=3, quiet=True, command="sink", **sink_env)

        ids = [d["id"] for d in snapshot]
        changed = table.update(ids[::10], " This entry was revised on review.")
        deleted = table.delete(ids[5::20])
        added = table.insert([{"id": f"new/{d['id']}", "text": d["text"]} for d in corpus[docs:]])
        events = changed + deleted + added
        log(
            f"==> {len(changed)} updates, {len(deleted) // 2} deletes (each with its tombstone), {len(added)} inserts in the table, published as change events"
        )
        publish(sender, run.input_topic, events, encode=encode)
        result["second"] = run.run_worker(idle_s=3, quiet=True, **worker_env)
        result["second_sink"] = run.run_worker(idle_s=3, quiet=True, command="sink", **sink_env)

        live = table.live()
        index = PostgresIndex(url, sink_env["EMBED_SINK__TABLE"], create=False)
        try:
            rows = index.rows()
        finally:
            index.close()
        by_doc = {r["parent_id"]: r for r in rows}
        stale = sorted(
            doc
            for doc, text in live.items()
            if doc in by_doc and by_doc[doc]["content_hash"] != content_hash(text)
        )
        result.update(
            live_rows=len(live),
            points=len(rows),
            missing=sorted(set(live) - set(by_doc))[:10],
            extra=sorted(set(by_doc) - set(live))[:10],
            stale=stale[:10],
            updates=len(changed),
            deletes=len(deleted) // 2,
            inserts=len(added),
        )
        result["ok"] = not (result["missing"] or result["extra"] or result["stale"]) and len(
            rows
        ) == len(live)
        log(
            f"==> the index {'matches' if result['ok'] else 'DOES NOT MATCH'} the table: {len(live)} live rows, {len(rows)} points, "
            f"missing {result['missing']}, extra {result['extra']}, stale {result['stale']}"
        )
        query = "how do I parse command line arguments"
        answer = subprocess.run(
            [sys.executable, "-m", "worker", "query", query, "-k", "3", "--store", "postgres"],
            env={**run.env(), **sink_env},
            capture_output=True,
            text=True,
        )
        result["query"] = answer.stdout.strip()
        log(
            f"==> embed-worker query --store postgres {query!r}\n{answer.stdout.rstrip() or answer.stderr.rstrip()}"
        )
        log(f"The stack keeps running; stop it with: embed-worker devstack down --dir {state_dir}")
    finally:
        sender.close()
        table.close()
    result["finished_at"] = time.time()
    return result
