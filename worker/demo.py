"""The main job on the embedded default, end to end, with the real commands.

Starts the local stack, publishes the sample corpus with ``embed-loadgen``, runs one
``embed-worker run`` until the topic is drained (documents longer than the model's window in
chunks), checks that every document came out and its offset was committed, prints documents/s and
tokens/s, runs ``embed-worker sink`` to build the vector index from the output topic, and ends with
``embed-worker query``: a semantic search of that index.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from worker.config import KafkaSettings, ModelSettings
from worker.publish.codec import decode_output
from worker.stack.devstack import LocalRun

DEMO_ENV = {
    "EMBED_LONG_TEXT__POLICY": "chunk"
}  # the corpus's longest documents are embedded whole, in chunks


def _step(text: str) -> None:
    print(f"==> {text}", flush=True)


def run_demo(*, docs: int, state_dir: str, query: str, baseline: bool = False) -> int:
    from loadgen.corpus import sample_corpus
    from loadgen.readback import committed_offsets, read_topic

    _step(f"starting the local stack (broker, Redis, PostgreSQL) in {state_dir}")
    run = LocalRun.start("demo", state_dir)
    with tempfile.TemporaryDirectory() as tmp:
        pub_file = Path(tmp, "publish.json")
        _step(f"publishing {docs} documents of the sample corpus with embed-loadgen")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "loadgen",
                "publish",
                "--count",
                str(docs),
                "--summary-file",
                str(pub_file),
            ],
            env=run.env(),
            check=True,
        )
        publish_report = json.loads(pub_file.read_text())
    published = publish_report["messages"]
    _step(
        "running one embed-worker until the topic is drained (--exit-when-idle 3, EMBED_LONG_TEXT__POLICY=chunk)"
    )
    summary = run.run_worker(idle_s=3, quiet=False, **DEMO_ENV)

    kafka = KafkaSettings(bootstrap_servers=run.addresses.kafka)
    outputs = [
        decode_output(r.value)
        for r in read_topic(kafka, run.output_topic, expect=published)
        if r.value is not None  # a tombstone carries no vector
    ]
    upserts = [o for o in outputs if o["op"] == "upsert"]
    documents = {o["parent_id"] for o in upserts}
    chunked = {o["parent_id"] for o in upserts if o["chunks"] > 1}
    print(
        f"\n{published} documents in, {len(documents)} embedded ({len(chunked)} of them in chunks: {len(upserts)} vectors), "
        f"{summary['dead_lettered']} dead-lettered\n"
        f"worker: {summary['docs_per_s']:,.1f} vectors/s, {summary['tokens_per_s']:,.0f} tokens/s "
        f"({summary['batches']} batches, padding efficiency {summary['padding_efficiency']})"
    )
    ends = {int(p): off for p, off in publish_report["end_offsets"].items()}
    committed = committed_offsets(kafka, run.name, run.input_topic, sorted(ends))
    print(
        f"committed offsets {'equal' if committed == ends else 'DIFFER FROM'} the topic's end offsets: {committed}"
    )
    if baseline:
        whole = {o["parent_id"]: o["vector"] for o in upserts if o["chunks"] == 1}
        _baseline(sample_corpus(docs), whole, summary["docs_per_s"])

    index_env = {
        "EMBED_SINK__PATH": str(Path(state_dir, "index", run.name)),
        "EMBED_SINK__GROUP_ID": f"{run.name}-sink",
    }
    _step(
        f"running embed-worker sink into the LanceDB index at {index_env['EMBED_SINK__PATH']} (--exit-when-idle 3)"
    )
    sink = run.run_worker(idle_s=3, quiet=False, command="sink", **index_env)
    print(
        f"sink: {sink['messages']} messages applied in {sink['writes']} writes; {sink['points_in_index']} points in the index"
    )
    _step(f"embed-worker query {query!r}")
    answer = subprocess.run(
        [sys.executable, "-m", "worker", "query", query, "-k", "5"],
        env={**run.env(), **index_env},
        capture_output=True,
        text=True,
    )
    print(answer.stdout.rstrip() or answer.stderr.rstrip())
    print(
        f"\nThe stack keeps running for you to explore; stop it with: embed-worker devstack down --dir {state_dir}"
    )
    print(
        f'Query the index again with: EMBED_SINK__PATH={index_env["EMBED_SINK__PATH"]} embed-worker query "your question"'
    )
    ok = (
        len(documents) == published
        and committed == ends
        and sink["points_in_index"] == len(upserts)
        and answer.returncode == 0
    )
    return 0 if ok else 1


def _baseline(
    corpus: list[dict],
    vectors: dict[str, np.ndarray],
    worker_docs_per_s: float,
    batch_size: int = 32,
) -> None:
    """sentence-transformers ``encode()`` on the same documents and model, in this process: its speed,
    and how close the worker's vectors are to its own."""
    texts = [d["text"] for d in corpus]
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        print(
            "\n(baseline skipped: sentence-transformers is not installed; pip install 'embedfleet[test]')"
        )
        return
    from worker.encode.transformer import resolve_model_path

    model = SentenceTransformer(resolve_model_path(ModelSettings().name), device="cpu")
    model.encode(texts[:64], batch_size=batch_size)  # warm-up, as the worker's first batch is
    started = time.monotonic()
    reference = model.encode(texts, batch_size=batch_size)
    rate = len(texts) / (time.monotonic() - started)
    ours = np.stack([vectors[d["id"]] for d in corpus if d["id"] in vectors])
    ref = np.stack([r for d, r in zip(corpus, reference) if d["id"] in vectors])
    cos = (ours * ref).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    print(
        f"worker vectors vs sentence-transformers: lowest cosine {cos.min():.5f} over {len(cos)} documents"
    )
    print(
        f"sentence-transformers encode(batch_size={batch_size}) on the same {len(texts)} documents: {rate:,.1f} documents/s; "
        f"worker (Kafka in, Redis dedup, vectors published and committed) / encode(): {worker_docs_per_s / rate:.2f}x"
    )
