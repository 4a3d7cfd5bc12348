"""The ``embed-worker dlq`` command line: ``summary`` and ``replay`` over EMBED_KAFKA__DLQ_TOPIC."""

from __future__ import annotations

import argparse
import json
import time

from worker.config import load_settings
from worker.deadletter.letters import Selection, iso, parse_range, parse_time
from worker.errors import ConfigError

SELECT_HELP = (
    "Letters are chosen by --reason, --id and --offsets (each repeatable; all given kinds must "
    "hold) within --since/--until (the time each was dead-lettered)."
)


def _selection(ns: argparse.Namespace) -> Selection:
    now = int(time.time() * 1000)
    return Selection(
        reasons=frozenset(ns.reason or ()),
        ids=frozenset(ns.id or ()),
        ranges=tuple(parse_range(r) for r in ns.offsets or ()),
        since_ms=parse_time(ns.since, "--since", now) if ns.since else None,
        until_ms=parse_time(ns.until, "--until", now) if ns.until else None,
    )


def _summary(ns: argparse.Namespace) -> int:
    from worker.deadletter.replay import progress_topic_for, read_letters, read_replayed
    from worker.deadletter.summary import render, summarize

    settings = load_settings()
    selection = _selection(ns)
    letters = read_letters(settings.kafka, selection, ns.timeout)
    progress = ns.progress_topic or progress_topic_for(settings.kafka.dlq_topic)
    replayed = read_replayed(settings.kafka, progress, timeout_s=ns.timeout)
    summary = summarize(letters, samples=ns.samples, replayed=replayed)
    if ns.json:
        print(json.dumps({"topic": settings.kafka.dlq_topic, **summary}))
    else:
        print(render(summary, settings.kafka.dlq_topic, selection.describe()))
    return 0


def _letter(x) -> dict:
    return {
        "place": x.place,
        "id": x.document_id,
        "reason": x.reason,
        "dead_lettered_at": iso(x.timestamp_ms),
        "source": f"{x.source_topic}/{x.source_partition}/{x.source_offset}",
    }


def _replay(ns: argparse.Namespace) -> int:
    from worker.deadletter.replay import Replayer

    selection = _selection(ns)
    if not ns.all and selection == Selection():
        raise ConfigError(
            "dlq replay: choose letters with --reason, --id, --offsets, --since or --until, or pass --all"
        )
    settings = load_settings()
    replayer = Replayer(
        settings.kafka, target=ns.to, progress_topic=ns.progress_topic, timeout_s=ns.timeout
    )
    plan = replayer.prepare(selection, check_newer=not ns.no_newer_check, dry_run=ns.dry_run)
    counts = plan.counts()
    where = f"{settings.kafka.dlq_topic} -> {replayer.target}"
    skipped = ", ".join(
        f"{v} {k.replace('_', ' ')}" for k, v in counts.items() if k != "to_send" and v
    )
    tail = f"; skipped: {skipped}" if skipped else ""
    if ns.dry_run:
        if ns.json:
            print(
                json.dumps({"dry_run": True, **counts, "letters": [_letter(x) for x in plan.send]})
            )
            return 0
        for x in plan.send:
            print(
                f"would send {x.place}  id={x.document_id}  reason={x.reason}  "
                f"dead-lettered {iso(x.timestamp_ms)}  from {x.source_topic}/{x.source_partition}/{x.source_offset}"
            )
        print(f"dry run, {where}: {len(plan.send)} to send ({selection.describe()}){tail}")
        return 0
    sent = replayer.send(plan.send)
    if ns.json:
        print(json.dumps({"dry_run": False, **counts, "replayed": sent}))
    else:
        print(
            f"replayed {sent} dead letters, {where} ({selection.describe()}); "
            f"progress in {replayer.progress_topic}{tail}"
        )
    return 0


def _selectors(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--reason",
        action="append",
        metavar="REASON",
        help="a reason code (the embed-dlq-reason header), e.g. encode_failed",
    )
    p.add_argument("--id", action="append", metavar="ID", help="a document id (the message key)")
    p.add_argument(
        "--offsets",
        action="append",
        metavar="P:START-END",
        help="source offsets of one input partition, both ends included (2:100-250, 2:100-, 2:117)",
    )
    p.add_argument(
        "--since",
        metavar="TIME",
        help="dead-lettered at or after: ISO 8601 (UTC) or an age (6h, 2d)",
    )
    p.add_argument(
        "--until", metavar="TIME", help="dead-lettered before (excluded): ISO 8601 or an age"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for each topic's metadata, for a read that makes no progress, and for deliveries (default: 30)",
    )
    p.add_argument(
        "--json", action="store_true", help="print the result as one JSON object instead of text"
    )


def add_parser(sub) -> None:
    dlq = sub.add_parser(
        "dlq",
        help="inspect and replay the dead-letter topic",
        description="Inspect EMBED_KAFKA__DLQ_TOPIC, and replay chosen dead letters to the input topic once.",
    )
    actions = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    summary = actions.add_parser(
        "summary",
        help="counts by reason and by source partition, with sample ids",
        description="Read the dead-letter topic and print counts by reason (with a few sample ids and "
        "the first detail of each) and by source partition. " + SELECT_HELP,
    )
    _selectors(summary)
    summary.add_argument(
        "--samples", type=int, default=3, help="sample ids per reason (default: 3)"
    )
    summary.add_argument(
        "--progress-topic",
        metavar="TOPIC",
        help="the replay progress topic, for the replayed column (default: EMBED_KAFKA__DLQ_TOPIC + '.replayed')",
    )
    summary.set_defaults(func=lambda ns, _src: _summary(ns))
    replay = actions.add_parser(
        "replay",
        help="re-publish chosen dead letters to the input topic, once",
        description="Re-publish chosen dead letters to the input topic with their original key and value. "
        + SELECT_HELP
        + " Each goes to the input partition it came from, and is recorded in a compacted progress topic "
        "(created if missing), so the same command run again publishes nothing twice. A letter superseded "
        "by a later message of its document in that partition is skipped (replaying it would undo the "
        "newer version), and so is one that cannot be checked: no key, or its source is gone from the input.",
    )
    _selectors(replay)
    replay.add_argument("--all", action="store_true", help="every dead letter (no selector needed)")
    replay.add_argument(
        "--dry-run", action="store_true", help="print what would be sent; send nothing"
    )
    replay.add_argument(
        "--to", metavar="TOPIC", help="the topic to publish to (default: EMBED_KAFKA__INPUT_TOPIC)"
    )
    replay.add_argument(
        "--progress-topic",
        metavar="TOPIC",
        help="where replayed letters are recorded (default: EMBED_KAFKA__DLQ_TOPIC + '.replayed')",
    )
    replay.add_argument(
        "--no-newer-check",
        action="store_true",
        help="do not read the input topic for later versions of the chosen documents (faster on a huge "
        "topic). An older version can then overwrite a newer one in the index, letters without a key "
        "or whose source is gone are sent too, and a replay that was published but not recorded "
        "is published again",
    )
    replay.set_defaults(func=lambda ns, _src: _replay(ns))
