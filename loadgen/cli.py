"""``embed-loadgen``: load documents into the input topic, measure the fleet end to end, compare runs."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from loadgen.corpus import CorpusError, read_jsonl, read_parquet, read_text_lines, sample_corpus
from loadgen.rate import Burst, Schedule
from loadgen.synthetic import SyntheticSpec, generate
from worker.config import load_settings
from worker.errors import ConfigError


def _settings(ns: argparse.Namespace):
    """Worker settings from the environment (EMBED_*), with this command's overrides."""
    settings = load_settings()
    kafka = {
        "bootstrap_servers": ns.bootstrap_servers,
        "input_topic": ns.topic,
        "output_topic": getattr(ns, "output_topic", None),
        "dlq_topic": getattr(ns, "dlq_topic", None),
        "group_id": getattr(ns, "group", None),
    }
    kafka = {k: v for k, v in kafka.items() if v}
    return settings.model_copy(update={"kafka": settings.kafka.model_copy(update=kafka)})


def _documents(ns: argparse.Namespace) -> tuple[list[dict], str]:
    if ns.jsonl:
        docs, source = list(read_jsonl(ns.jsonl)), f"jsonl:{ns.jsonl}"
    elif ns.text:
        docs, source = list(read_text_lines(ns.text)), f"text:{ns.text}"
    elif ns.parquet:
        if not ns.text_column:
            raise CorpusError("--parquet needs --text-column")
        docs, source = (
            list(read_parquet(ns.parquet, ns.text_column, ns.id_column)),
            f"parquet:{ns.parquet}",
        )
    elif ns.synthetic is not None:
        vocab = Path(
            load_settings().model.name, "vocab.txt"
        )  # a local model's own words, when it has them
        spec = SyntheticSpec(
            ns.synthetic,
            ns.lengths,
            ns.vocabulary,
            ns.duplicates,
            ns.edits,
            ns.deletes,
            ns.seed,
            ns.id_prefix,
            str(vocab) if vocab.is_file() else None,
        )
        docs, source = list(generate(spec)), f"synthetic:{spec}"
    else:
        docs, source = sample_corpus(), "sample corpus"
    if ns.count is not None:
        docs = docs[: ns.count]
    return docs, source


def _schedule(ns: argparse.Namespace, docs: list[dict]) -> tuple[Schedule | None, list[dict]]:
    if ns.rate is None:
        if ns.duration or ns.ramp_to or ns.burst:
            raise CorpusError("--duration, --ramp-to and --burst need --rate")
        return None, docs
    schedule = Schedule(
        ns.rate, ns.ramp_to, ns.ramp_seconds or 0.0, tuple(Burst.parse(b) for b in ns.burst or [])
    )
    if ns.duration:  # as many documents as the schedule sends in that time, cycling the source
        n = schedule.count_for(ns.duration)
        docs = [
            docs[i % len(docs)]
            if i < len(docs)
            else {**docs[i % len(docs)], "id": f"{docs[i % len(docs)]['id']}~{i // len(docs)}"}
            for i in range(n)
        ]
    return schedule, docs


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _progress(total: int):
    try:
        from tqdm import tqdm
    except ImportError:
        return None, lambda: None
    bar = tqdm(total=total, unit="msg", unit_scale=True, dynamic_ncols=True, file=sys.stderr)
    return bar.update, bar.close


def _cmd_publish(ns: argparse.Namespace) -> int:
    from loadgen.publish import publish_parallel

    settings = _settings(ns)
    docs, source = _documents(ns)
    schedule, docs = _schedule(ns, docs)
    update, close = _progress(len(docs))
    try:
        report = publish_parallel(
            settings.kafka,
            settings.kafka.input_topic,
            docs,
            ns.processes,
            schedule=schedule,
            progress=update,
        )
    finally:
        close()
    summary = {
        "topic": settings.kafka.input_topic,
        "source": source,
        "messages": report.messages,
        "bytes": report.bytes,
        "seconds": round(report.seconds, 3),
        "messages_per_s": round(report.rate, 1),
        "end_offsets": report.end_offsets,
        "late_s": round(report.late_s, 3),
    }
    print(
        f"published {report.messages:,} documents ({report.bytes / 1e6:.1f} MB) to {settings.kafka.input_topic} in {report.seconds:.2f} s "
        f"({report.rate:,.0f} messages/s{', ' + str(ns.processes) + ' processes' if ns.processes > 1 else ''})"
    )
    if ns.summary_file:
        Path(ns.summary_file).write_text(json.dumps(summary))
    return 0


def _cmd_measure(ns: argparse.Namespace) -> int:
    from loadgen.report import summary_text, write_charts, write_json
    from loadgen.session import run_measured

    settings = _settings(ns)
    docs, source = _documents(ns)
    schedule, docs = _schedule(ns, docs)
    label = ns.label or time.strftime("run-%Y%m%d-%H%M%S")
    update, close = _progress(len(docs))
    try:
        report = run_measured(
            settings,
            docs,
            label=label,
            schedule=schedule,
            settle_s=ns.settle,
            timeout_s=ns.timeout,
            progress=update,
            config={"source": source},
        )
    finally:
        close()
    out = Path(ns.report_dir) / label
    out.mkdir(parents=True, exist_ok=True)
    write_json(report, out / "report.json")
    charts = write_charts(report, out)
    print(summary_text(report))
    print(f"  report       {out / 'report.json'}; charts {', '.join(c.name for c in charts)}")
    return 0 if report["counts"]["missing_ids"] == 0 else 1


def _cmd_bench(ns: argparse.Namespace) -> int:
    from loadgen.bench import run_bench, summary_text, write_chart

    settings = load_settings()
    docs, source = _documents(ns)
    docs = [d for d in docs if d.get("op", "upsert") == "upsert" and d.get("text")]
    skip = set(ns.skip or [])
    result = run_bench(
        settings,
        docs,
        state_dir=ns.dir,
        st_batch_sizes=[int(b) for b in ns.st_batch_sizes.split(",")],
        skip=skip,
        partitions=ns.partitions,
        rounds=ns.rounds,
    )
    result["source"] = source
    label = ns.label or time.strftime("bench-%Y%m%d-%H%M%S")
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{label}.json").write_text(json.dumps(result, indent=2))
    chart = write_chart(result, out / f"{label}.png")
    print(summary_text(result))
    print(f"results: {out / (label + '.json')}, chart: {chart}")
    return 0


def _cmd_cdc(ns: argparse.Namespace) -> int:
    from loadgen.cdcdemo import run_cdc

    result = run_cdc(ns.state_dir, ns.docs)
    if ns.json_out:
        Path(ns.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(ns.json_out).write_text(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


def _cmd_sinkbench(ns: argparse.Namespace) -> int:
    import shutil
    import tempfile

    from loadgen.sinkbench import run_sinkbench, summary_text
    from worker.stack.devstack import start_postgres, stop_postgres

    url, pgdata = ns.postgres_url, None
    if (
        url is None
    ):  # a throwaway PostgreSQL with pgvector (the pgserver wheel of the local extra), if installed
        pgdata = Path(tempfile.mkdtemp(prefix="sinkbench-pg-")) / "data"
        url = start_postgres(pgdata)
    try:
        result = run_sinkbench(ns.count, ns.dim, ns.batch, url)
    finally:
        if pgdata is not None:
            stop_postgres(pgdata)
            shutil.rmtree(pgdata.parent, ignore_errors=True)
    print(summary_text(result))
    if ns.json_out:
        Path(ns.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(ns.json_out).write_text(json.dumps(result, indent=2))
    return 0


def _cmd_hostpath(ns: argparse.Namespace) -> int:
    from loadgen.hostpath import run_hostpath, summary_text

    result = run_hostpath(
        ns.count, ns.state_dir, client=ns.client, profile=ns.profile, debezium=ns.debezium
    )
    print(summary_text(result))
    if ns.json_out:
        Path(ns.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(ns.json_out).write_text(json.dumps(result, indent=2))
        print(f"results: {ns.json_out}")
    return 0


def _cmd_curve(ns: argparse.Namespace) -> int:
    from loadgen.curve import run_curve, summary_text, write_chart

    loads = [float(x) / 100 for x in ns.loads.split(",")]
    if not loads or any(not 0 < x <= 2 for x in loads):
        raise ValueError(
            f"--loads takes percentages of the backlog rate between 1 and 200, not {ns.loads!r}"
        )
    result = run_curve(
        ns.state_dir,
        loads=loads,
        duration_s=ns.duration,
        backlog=ns.backlog,
        partitions=ns.partitions,
        progress=lambda line: print(line, flush=True),
    )
    result["environment"] = {"cpu_count": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    label = ns.label or time.strftime("curve-%Y%m%d-%H%M%S")
    (out / f"{label}.json").write_text(json.dumps(result, indent=2))
    chart = write_chart(result, out / f"{label}.png")
    print(summary_text(result))
    print(f"results: {out / (label + '.json')}, chart: {chart}")
    return 0 if all(p["missing"] == 0 for p in result["points"]) else 1


def _cmd_compare(ns: argparse.Namespace) -> int:
    from loadgen.report import compare_text

    a, b = (json.loads(Path(p).read_text()) for p in (ns.a, ns.b))
    print(compare_text(a, b))
    return 0


SCENARIO_NAMES = (  # loadgen.scenarios.SCENARIOS, without importing it for --help
    "kill9",
    "broker-freeze",
    "redis-down",
    "redis-down-closed",
    "scale",
    "sigterm",
    "fuzz",
    "sigterm-exactly-once",
    "redis-down-recreate",
    "model-switch",
)


def _cmd_faults(ns: argparse.Namespace) -> int:
    import tempfile

    from loadgen.scenarios import HEADER, SCENARIOS, run_suite, table_row

    names = ns.scenario or list(SCENARIOS)
    state_dir = ns.dir or tempfile.mkdtemp(prefix="embed-faults-")
    print(
        f"fault suite ({ns.size}): {', '.join(names)}; stack, worker logs: {state_dir}", flush=True
    )
    print(" | ".join(HEADER), flush=True)
    outcomes = run_suite(
        names,
        ns.size,
        state_dir,
        seed=ns.seed,
        client=ns.client,
        report=lambda o: print(
            " | ".join(table_row(o)) + "".join(f"\n    {d}" for d in o.details), flush=True
        ),
    )
    if ns.json:
        Path(ns.json).write_text(json.dumps([o.to_json() for o in outcomes], indent=2))
    failed = [o.scenario for o in outcomes if not o.passed]
    print(
        f"{len(outcomes) - len(failed)}/{len(outcomes)} scenarios passed"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


def _add_source(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("documents (the bundled sample corpus when none is given)")
    src.add_argument(
        "--jsonl", metavar="PATH", help="JSONL (.gz too): one {id, text, metadata?} per line"
    )
    src.add_argument("--text", metavar="PATH", help="plain text: one document per line")
    src.add_argument(
        "--parquet",
        metavar="PATH",
        help="Parquet file (with --text-column, optionally --id-column)",
    )
    src.add_argument("--text-column", help="Parquet column holding the text")
    src.add_argument("--id-column", help="Parquet column holding the id (default: row numbers)")
    src.add_argument("--synthetic", type=int, metavar="N", help="N seeded synthetic documents")
    src.add_argument(
        "--lengths",
        default="mixed",
        help="synthetic lengths in tokens: short (10-50), long (300-512), mixed, or MIN-MAX",
    )
    src.add_argument(
        "--vocabulary", type=int, default=5000, help="synthetic vocabulary size (words)"
    )
    src.add_argument(
        "--duplicates", type=float, default=0.0, help="share of exact re-publishes of earlier ids"
    )
    src.add_argument(
        "--edits", type=float, default=0.0, help="share of changed texts for earlier ids"
    )
    src.add_argument("--deletes", type=float, default=0.0, help="share of deletes of earlier ids")
    src.add_argument(
        "--seed", type=int, default=0, help="synthetic seed (same seed, same documents)"
    )
    src.add_argument("--id-prefix", default="syn", help="synthetic id prefix")
    src.add_argument("--count", type=int, help="only the first N documents")
    rate = p.add_argument_group("rate (as fast as possible when --rate is not given)")
    rate.add_argument(
        "--rate",
        type=float,
        help="open-loop target, messages/s (late messages keep their intended timestamps)",
    )
    rate.add_argument(
        "--duration", type=float, help="with --rate: run this many seconds, cycling the documents"
    )
    rate.add_argument(
        "--ramp-to", type=float, help="with --rate: ramp linearly to this rate over --ramp-seconds"
    )
    rate.add_argument("--ramp-seconds", type=float, help="length of the ramp")
    rate.add_argument(
        "--burst",
        action="append",
        metavar="AT:SECONDS:MULT",
        help="multiply the rate for a while (repeatable)",
    )
    kafka = p.add_argument_group(
        "Kafka (defaults: the worker's EMBED_KAFKA__* settings, security included)"
    )
    kafka.add_argument("--topic", help="input topic")
    kafka.add_argument("--bootstrap-servers", help="brokers")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embed-loadgen",
        description="Load documents into the embedding fleet and measure it end to end.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pub = sub.add_parser("publish", help="publish documents keyed by id")
    _add_source(pub)
    pub.add_argument(
        "--processes",
        type=int,
        default=1,
        help="producer processes (each id stays in one, in order)",
    )
    pub.add_argument(
        "--summary-file",
        metavar="PATH",
        help="write the publish report (end offsets per partition too) as JSON",
    )
    pub.set_defaults(func=_cmd_publish)

    mea = sub.add_parser(
        "measure",
        help="publish while reading the outputs: latency, throughput, lag, missing ids; JSON and PNG report",
    )
    _add_source(mea)
    mea.add_argument("--output-topic", help="output topic (default: EMBED_KAFKA__OUTPUT_TOPIC)")
    mea.add_argument("--dlq-topic", help="dead-letter topic (default: EMBED_KAFKA__DLQ_TOPIC)")
    mea.add_argument(
        "--group", help="the workers' consumer group, for lag (default: EMBED_KAFKA__GROUP_ID)"
    )
    mea.add_argument("--label", help="name of the run (default: run-<time>)")
    mea.add_argument(
        "--report-dir", default="reports", help="reports go to REPORT_DIR/LABEL/ (default: reports)"
    )
    mea.add_argument(
        "--settle",
        type=float,
        default=15.0,
        help="stop waiting once no output arrived for this long (s)",
    )
    mea.add_argument(
        "--timeout", type=float, default=600.0, help="stop waiting after this long in all (s)"
    )
    mea.set_defaults(func=_cmd_measure)

    ben = sub.add_parser(
        "bench",
        help="sentence-transformers vs the raw sorted forward pass vs the full pipeline, on the same documents",
    )
    _add_source(ben)
    ben.add_argument(
        "--st-batch-sizes",
        default="16,32,64,128",
        help="sentence-transformers batch sizes to try (the best is used)",
    )
    ben.add_argument(
        "--skip",
        action="append",
        choices=["st", "pipeline"],
        help="leave out a measurement (repeatable)",
    )
    ben.add_argument(
        "--dir", default=".devstack", help="local stack state directory (default: .devstack)"
    )
    ben.add_argument(
        "--partitions",
        type=int,
        default=4,
        help="partitions of the run's topics: at least EMBED_PROCESSES (default: 4)",
    )
    ben.add_argument(
        "--rounds",
        type=_positive_int,
        default=1,
        help="times the pipeline and the raw pass after it alternate; the ratio is the rounds' mean (default: 1)",
    )
    ben.add_argument(
        "--out",
        default="reports",
        help="where the JSON result and the PNG chart go (default: reports)",
    )
    ben.add_argument("--label", help="file name of the result (default: bench-<time>)")
    ben.set_defaults(func=_cmd_bench)

    cdc = sub.add_parser(
        "cdc",
        help="a PostgreSQL table of the sample corpus followed into a pgvector index: snapshot, updates, deletes, inserts as Debezium events",
    )
    cdc.add_argument("--docs", type=int, default=300, help="rows of the table (default: 300)")
    cdc.add_argument(
        "--state-dir", default=".devstack", help="local stack state directory (default: .devstack)"
    )
    cdc.add_argument("--json-out", metavar="PATH", help="also write the results as JSON")
    cdc.set_defaults(func=_cmd_cdc)

    snk = sub.add_parser(
        "sinkbench",
        help="points/s each index store applies: LanceDB, PostgreSQL + pgvector with and without HNSW",
    )
    snk.add_argument("--count", type=int, default=20_000, help="points (default: 20000)")
    snk.add_argument(
        "--dim", type=int, default=384, help="vector dimension (default: 384, all-MiniLM-L6-v2's)"
    )
    snk.add_argument(
        "--batch",
        type=int,
        default=1000,
        help="points per write, as EMBED_SINK__MAX_POLL_RECORDS (default: 1000)",
    )
    snk.add_argument(
        "--postgres-url",
        help="a PostgreSQL with pgvector (default: a throwaway one from the pgserver wheel)",
    )
    snk.add_argument("--json-out", metavar="PATH", help="also write the results as JSON")
    snk.set_defaults(func=_cmd_sinkbench)

    hos = sub.add_parser(
        "hostpath",
        help="one embed-worker with a near-free model vs a bare consume-tokenize-produce loop, on short texts",
    )
    hos.add_argument(
        "--count", type=int, default=30_000, help="short documents per run (default: 30000)"
    )
    hos.add_argument(
        "--client",
        choices=["auto", "confluent", "kafka-python"],
        help="the worker's Kafka client (EMBED_KAFKA__CLIENT; default: the worker's own)",
    )
    hos.add_argument(
        "--profile",
        action="store_true",
        help="also run the worker under py-spy and show where its time goes",
    )
    hos.add_argument(
        "--debezium",
        action="store_true",
        help="also run the worker on the same texts as Debezium change events (EMBED_INPUT__FORMAT=debezium)",
    )
    hos.add_argument("--json-out", metavar="PATH", help="also write the results as JSON")
    hos.add_argument(
        "--state-dir",
        default=".devstack",
        help="local stack state directory; the tiny model is built there (default: .devstack)",
    )
    hos.set_defaults(func=_cmd_hostpath)

    cur = sub.add_parser(
        "curve",
        help="latency, padding and batch size of one worker at shares of the backlog rate it measures first",
    )
    cur.add_argument(
        "--loads",
        default="25,50,75,90",
        help="percentages of the backlog rate to run at (default: 25,50,75,90)",
    )
    cur.add_argument(
        "--duration",
        type=float,
        default=30.0,
        help="seconds of open-loop load at each share (default: 30)",
    )
    cur.add_argument(
        "--backlog",
        type=int,
        default=3000,
        help="documents drained first to measure the backlog rate (default: 3000)",
    )
    cur.add_argument(
        "--partitions", type=int, default=4, help="partitions of the run's topics (default: 4)"
    )
    cur.add_argument(
        "--state-dir", default=".devstack", help="local stack state directory (default: .devstack)"
    )
    cur.add_argument(
        "--out",
        default="reports",
        help="where the JSON result and the PNG chart go (default: reports)",
    )
    cur.add_argument("--label", help="file name of the result (default: curve-<time>)")
    cur.set_defaults(func=_cmd_curve)

    flt = sub.add_parser(
        "faults",
        help="fault-injection suite: kill -9, broker freeze, Redis outage, scaling, SIGTERM, fuzzed input, the index after Redis blips and model switches; 0 lost or exit 1",
    )
    flt.add_argument(
        "--scenario",
        action="append",
        choices=list(SCENARIO_NAMES),
        help="run only this scenario (repeatable; default: all)",
    )
    flt.add_argument(
        "--size",
        choices=["full", "ci"],
        default="full",
        help="full: the issue's sizes (5,000 documents, 20 kills, 10,000 fuzzed payloads); ci: a small form",
    )
    flt.add_argument("--seed", type=int, default=1, help="seed of the random fault moments")
    flt.add_argument(
        "--client",
        choices=["auto", "confluent", "kafka-python"],
        help="the Kafka client of the workers and the lab (EMBED_KAFKA__CLIENT; default: the worker's own)",
    )
    flt.add_argument(
        "--dir",
        help="state directory of the suite's own broker and Redis, and the worker logs (default: a new temporary one)",
    )
    flt.add_argument("--json", metavar="PATH", help="also write the outcomes as JSON")
    flt.set_defaults(func=_cmd_faults)

    cmp_ = sub.add_parser("compare", help="compare two measure reports side by side")
    cmp_.add_argument("a", help="report.json of the baseline run")
    cmp_.add_argument("b", help="report.json of the other run")
    cmp_.set_defaults(func=_cmd_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        return ns.func(ns)
    except (ConfigError, CorpusError, ValueError) as exc:
        print(f"embed-loadgen: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"embed-loadgen: fatal: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
