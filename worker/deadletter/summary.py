"""``embed-worker dlq summary``: what the dead-letter topic holds, by reason and by source partition.

``summarize`` is pure (letters in, a JSON-ready dict out); ``render`` is its text form.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable
from typing import Any

from worker.deadletter.letters import DeadLetter, iso


def summarize(
    letters: Iterable[DeadLetter], samples: int = 3, replayed: Collection[str] = frozenset()
) -> dict[str, Any]:
    """Counts by reason (most first, with up to ``samples`` document ids, the first detail, and
    how many were replayed already: their places are in ``replayed``) and by source topic and
    partition, the time span, and how many cannot be replayed (the original value was too large
    to keep)."""
    by_reason: Counter[str] = Counter()
    done: Counter[str] = Counter()
    by_source: Counter[tuple[str, int]] = Counter()
    ids: dict[str, list[str]] = {}
    details: dict[str, str] = {}
    first = last = None
    unreplayable = 0
    for letter in letters:
        by_reason[letter.reason] += 1
        done[letter.reason] += letter.place in replayed
        by_source[(letter.source_topic, letter.source_partition)] += 1
        seen = ids.setdefault(letter.reason, [])
        if len(seen) < samples and letter.document_id not in seen:
            seen.append(letter.document_id)
        details.setdefault(letter.reason, letter.detail)
        first = letter.timestamp_ms if first is None else min(first, letter.timestamp_ms)
        last = letter.timestamp_ms if last is None else max(last, letter.timestamp_ms)
        unreplayable += not letter.value_kept
    return {
        "total": sum(by_reason.values()),
        "first": iso(first) if first is not None else None,
        "last": iso(last) if last is not None else None,
        "not_replayable": unreplayable,
        "replayed": sum(done.values()),
        "by_reason": [
            {
                "reason": r,
                "count": n,
                "replayed": done[r],
                "sample_ids": ids[r],
                "detail": details[r],
            }
            for r, n in sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        "by_source": [
            {"topic": t, "partition": p, "count": n}
            for (t, p), n in sorted(by_source.items(), key=lambda kv: (kv[0][0], kv[0][1]))
        ],
    }


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def render(summary: dict[str, Any], topic: str, selected: str) -> str:
    if not summary["total"]:
        return f"{topic}: no dead letters ({selected})"
    lines = [
        f"{topic}: {summary['total']:,} dead letters, {summary['first']} .. {summary['last']} ({selected})",
        "",
        f"  {'reason':<20} {'count':>8} {'replayed':>8}  sample ids / first detail",
    ]
    for row in summary["by_reason"]:
        lines.append(
            f"  {row['reason']:<20} {row['count']:>8,} {row['replayed']:>8,}  "
            f"{_clip(', '.join(row['sample_ids']), 60)}"
        )
        if row["detail"]:
            lines.append(f"  {'':<20} {'':>8} {'':>8}  {_clip(row['detail'], 60)}")
    lines += ["", f"  {'source partition':<40} {'count':>8}"]
    for row in summary["by_source"]:
        where = f"{row['topic']}/{row['partition']}" if row["topic"] else "(not recorded)"
        lines.append(f"  {_clip(where, 40):<40} {row['count']:>8,}")
    if summary["not_replayable"]:
        lines += [
            "",
            f"  {summary['not_replayable']:,} of them kept no value (the original was too large): "
            "replay skips them; the source offset still points at the original.",
        ]
    return "\n".join(lines)
