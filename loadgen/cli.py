"""``embed-loadgen``: load documents into the input topic."""

from __future__ import annotations

import argparse
import json
import sys

from loadgen.corpus import CorpusError, read_jsonl, sample_corpus
from loadgen.publish import make_producer, publish
from worker.config import load_settings
from worker.errors import ConfigError


def _cmd_publish(ns: argparse.Namespace) -> int:
    overrides = {k: v for k, v in {"bootstrap_servers": ns.bootstrap_servers, "input_topic": ns.topic}.items() if v}
    settings = load_settings()
    kafka = settings.kafka.model_copy(update=overrides)
    docs = list(read_jsonl(ns.jsonl)) if ns.jsonl else sample_corpus()
    if ns.count is not None:
        docs = docs[: ns.count]
    producer = make_producer(kafka)
    try:
        report = publish(producer, kafka.input_topic, docs)
    finally:
        producer.close()
    summary = {"topic": kafka.input_topic, "messages": report.messages, "bytes": report.bytes, "seconds": round(report.seconds, 3), "messages_per_s": round(report.rate, 1), "end_offsets": report.end_offsets}
    print(f"published {report.messages} documents ({report.bytes / 1e6:.1f} MB) to {kafka.input_topic} in {report.seconds:.2f} s ({report.rate:,.0f} messages/s)")
    if ns.summary_file:
        with open(ns.summary_file, "w") as f:
            json.dump(summary, f)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embed-loadgen", description="Publish documents to the embedding fleet's input topic.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    pub = sub.add_parser("publish", help="publish documents keyed by id (the bundled sample corpus by default)")
    pub.add_argument("--jsonl", metavar="PATH", help="JSONL file (.gz too): one {id, text, metadata?} per line")
    pub.add_argument("--count", type=int, help="publish only the first N documents")
    pub.add_argument("--topic", help="input topic (default: EMBED_KAFKA__INPUT_TOPIC)")
    pub.add_argument("--bootstrap-servers", help="brokers (default: EMBED_KAFKA__BOOTSTRAP_SERVERS)")
    pub.add_argument("--summary-file", metavar="PATH", help="write the publish report (incl. end offsets per partition) as JSON")
    pub.set_defaults(func=_cmd_publish)
    return parser


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        return ns.func(ns)
    except (ConfigError, CorpusError) as exc:
        print(f"embed-loadgen: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"embed-loadgen: fatal: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
