"""``embed-worker``: run the worker or the index sink, query the index, manage the local stack, run
the demo, show the settings."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import signal
import sys
import threading

from pydantic_settings import CliSettingsSource

from worker import __version__
from worker.config import Settings, load_settings
from worker.errors import ConfigError, EmbedError

PROG = "embed-worker"


def _install_signal_handlers(stop: threading.Event) -> None:
    """First SIGINT/SIGTERM: stop cleanly. A second one: the default (immediate) behaviour."""

    def handler(signum, _frame):
        logging.getLogger(PROG).info(
            "received %s: stopping after the current batch", signal.Signals(signum).name
        )
        stop.set()
        signal.signal(signum, signal.SIG_DFL)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def setup_logging(level: str, fmt: str = "text") -> None:
    from worker.observe.logs import JsonFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLevelName(level)))


def _started(settings: Settings) -> threading.Event:
    """Logging as the settings say, and the event the first SIGINT/SIGTERM sets."""
    setup_logging(settings.log_level, settings.log_format)
    stop = threading.Event()
    _install_signal_handlers(stop)
    return stop


def _write_summary(path: str | None, summary: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(summary, f)


def _cmd_run(ns: argparse.Namespace, cli_source: CliSettingsSource) -> int:
    from worker.app import run_worker

    settings = load_settings(_cli_settings_source=cli_source(parsed_args=ns))
    stop = _started(settings)
    if settings.processes > 1:
        from worker.fleet import Fleet

        run_args = ns.argv[
            ns.argv.index("run") + 1 :
        ]  # the children get the same flags, then their own
        return Fleet(settings, run_args, ns.summary_file).run(stop)
    stats = run_worker(settings, stop, ns.exit_when_idle)
    _write_summary(ns.summary_file, stats.summary())
    return 0


def _sink_settings(ns: argparse.Namespace) -> Settings:
    """The environment's settings, with ``--store`` over EMBED_SINK__STORE."""
    return load_settings(sink={"store": ns.store}) if ns.store else load_settings()


def _cmd_sink(ns: argparse.Namespace, _cli_source) -> int:
    from worker.sink.consumer import run_sink

    settings = _sink_settings(ns)
    _write_summary(ns.summary_file, run_sink(settings, _started(settings), ns.exit_when_idle))
    return 0


def _cmd_query(ns: argparse.Namespace, _cli_source) -> int:
    from worker.sink.query import render, search

    settings = _sink_settings(ns)
    setup_logging("WARNING", settings.log_format)
    hits = search(settings, ns.text, ns.k)
    if ns.json:
        print(
            json.dumps(
                [
                    {
                        "document": h.document,
                        "score": round(h.score, 6),
                        "point": h.point,
                        "chunk": h.chunk,
                        "chunks": h.chunks,
                        "metadata": h.metadata,
                    }
                    for h in hits
                ]
            )
        )
    else:
        print(render(ns.text, hits))
    return 0


def _cmd_devstack(ns: argparse.Namespace, _cli_source) -> int:
    from worker.stack.devstack import DevStack

    stack = DevStack(ns.dir)
    if ns.action == "down":
        stack.down()
        print(f"local stack in {stack.dir} stopped")
        return 0
    if ns.action == "status":
        addrs = stack.addresses()
        up = stack.running()
        print(f"local stack in {stack.dir}: {'running' if up else 'stopped'}")
        if up and addrs:
            for k, v in addrs.env().items():
                print(f"export {k}={shlex.quote(v)}")
        return 0 if up else 3
    settings = load_settings()
    topics = {
        settings.kafka.input_topic: ns.partitions,
        settings.kafka.output_topic: ns.partitions,
        settings.kafka.dlq_topic: 1,
    }
    addrs = stack.up(kafka_port=ns.kafka_port, redis_port=ns.redis_port, topics=topics)
    print(f"# local stack running (state in {stack.dir}); use it with:")
    for k, v in addrs.env().items():
        print(f"export {k}={shlex.quote(v)}")
    return 0


def _cmd_demo(ns: argparse.Namespace, _cli_source) -> int:
    from worker.demo import run_demo

    setup_logging("WARNING")
    return run_demo(docs=ns.docs, state_dir=ns.dir, query=ns.query, baseline=ns.baseline)


def _cmd_config(ns: argparse.Namespace, _cli_source) -> int:
    from worker.settings_doc import settings_table

    if ns.markdown:
        print(settings_table())
    else:
        print(load_settings().model_dump_json(indent=2))
    return 0


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return int(text)


def build_parser() -> tuple[argparse.ArgumentParser, CliSettingsSource]:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Streaming embedding worker: Kafka documents in, vectors out."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="consume documents and publish vectors until stopped",
        description="Consume documents and publish vectors until SIGINT/SIGTERM. Every setting is also an "
        "environment variable: --batch.max-tokens is EMBED_BATCH__MAX_TOKENS.",
    )
    run.add_argument(
        "--exit-when-idle",
        type=float,
        metavar="SECONDS",
        help="stop cleanly once no message has arrived for this long",
    )
    run.add_argument(
        "--summary-file",
        metavar="PATH",
        help="write the run summary (counts, documents/s, tokens/s) as JSON",
    )
    run.set_defaults(func=_cmd_run)
    cli_source: CliSettingsSource[argparse.ArgumentParser] = CliSettingsSource(
        Settings, root_parser=run
    )

    sink = sub.add_parser(
        "sink",
        help="apply the output topic to the vector index (LanceDB, or PostgreSQL with pgvector), committing after each write",
        description="Consume EMBED_KAFKA__OUTPUT_TOPIC with the group EMBED_SINK__GROUP_ID and keep the index in step: the "
        "LanceDB index at EMBED_SINK__PATH, or with --store postgres a pgvector table at EMBED_SINK__POSTGRES_URL (created "
        "with an HNSW index if missing): upserts, deletes, tombstones, chunks of older versions removed. Offsets are committed "
        "only after the index has written what they cover. Settings come from the environment (embed-worker config).",
    )
    sink.add_argument(
        "--store",
        choices=["lancedb", "postgres"],
        help="the index's store (EMBED_SINK__STORE; postgres: EMBED_SINK__POSTGRES_URL)",
    )
    sink.add_argument(
        "--exit-when-idle",
        type=float,
        metavar="SECONDS",
        help="stop once no message has arrived for this long",
    )
    sink.add_argument(
        "--summary-file",
        metavar="PATH",
        help="write the sink's summary (messages, points, writes) as JSON",
    )
    sink.set_defaults(func=_cmd_sink)

    query = sub.add_parser(
        "query",
        help="embed a text with the worker's model settings and print the nearest documents in the index",
        description="Embed TEXT with the model the worker uses (EMBED_MODEL__*) and print the top-k documents of the index "
        "at EMBED_SINK__PATH, best first, with cosine scores. A document's chunks count once, by its best chunk.",
    )
    query.add_argument("text", help="the query text")
    query.add_argument("-k", type=_positive, default=5, help="documents to return (default: 5)")
    query.add_argument(
        "--store", choices=["lancedb", "postgres"], help="the index's store (EMBED_SINK__STORE)"
    )
    query.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list of {document, score, point, chunk, chunks, metadata}",
    )
    query.set_defaults(func=_cmd_query)

    dev = sub.add_parser(
        "devstack",
        help="start/stop a local broker, Redis and PostgreSQL with pgvector on loopback (no Docker, no root)",
    )
    dev.add_argument("action", choices=["up", "down", "status"])
    dev.add_argument(
        "--dir",
        default=".devstack",
        help="state directory for pids, ports and logs (default: .devstack)",
    )
    dev.add_argument("--kafka-port", type=int, default=0, help="broker port (default: a free one)")
    dev.add_argument("--redis-port", type=int, default=0, help="Redis port (default: a free one)")
    dev.add_argument(
        "--partitions",
        type=int,
        default=4,
        help="partitions of the input and output topics (default: 4)",
    )
    dev.set_defaults(func=_cmd_devstack)

    demo = sub.add_parser(
        "demo",
        help="the main job on the embedded default: local stack, sample corpus, one worker, the index sink, a query",
    )
    demo.add_argument(
        "--docs",
        type=int,
        default=2000,
        help="documents of the sample corpus to publish (default: 2000)",
    )
    demo.add_argument(
        "--dir", default=".devstack", help="local stack state directory (default: .devstack)"
    )
    demo.add_argument(
        "--query",
        default="how do I parse command line arguments",
        help="text of the closing embed-worker query",
    )
    demo.add_argument(
        "--baseline",
        action="store_true",
        help="also time sentence-transformers encode() on the same documents",
    )
    demo.set_defaults(func=_cmd_demo)

    from worker.deadletter.command import add_parser as add_dlq_parser

    add_dlq_parser(sub)

    cfg = sub.add_parser(
        "config", help="print the effective settings (secrets masked), or the settings table"
    )
    cfg.add_argument(
        "--markdown", action="store_true", help="print the settings table of docs/configuration.md"
    )
    cfg.set_defaults(func=_cmd_config)
    return parser, cli_source


def main(argv: list[str] | None = None) -> int:
    parser, cli_source = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    ns = parser.parse_args(argv)
    ns.argv = argv
    try:
        return ns.func(ns, cli_source)
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except EmbedError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # anything unplanned: one clear line; the traceback at DEBUG
        logging.getLogger(PROG).debug("fatal error", exc_info=True)
        print(f"{PROG}: fatal: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
