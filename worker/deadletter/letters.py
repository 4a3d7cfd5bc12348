"""A dead letter as the dead-letter topic holds it, and which letters a command selects.

Everything here is pure: a letter is parsed from a read message, and a ``Selection`` is a
predicate over letters built from the command line (reason, id, source offset range, time range).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from worker.errors import ConfigError
from worker.transport import Message

# Where the worker's dead letters say why and from where (worker.publish.codec.dead_letter).
REASON, DETAIL = "embed-dlq-reason", "embed-dlq-detail"
SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET = (
    "embed-source-topic",
    "embed-source-partition",
    "embed-source-offset",
)
VALUE_BYTES = "embed-dlq-value-bytes"  # set when the original value was too large to keep
UNKNOWN = "unknown"  # the reason of a message on the topic that no worker wrote


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str  # the dead-letter topic, and where on it
    partition: int
    offset: int
    timestamp_ms: int  # when it was dead-lettered
    key: bytes | None  # the original key and value, unchanged
    value: bytes | None
    reason: str
    detail: str
    source_topic: str
    source_partition: int  # -1 where the headers do not say
    source_offset: int
    value_kept: bool  # False: the original was too large to keep; it cannot be replayed

    @property
    def place(self) -> str:
        """The letter's own address, ``topic/partition/offset``: what a replay records."""
        return f"{self.topic}/{self.partition}/{self.offset}"

    @property
    def document_id(self) -> str:
        """The key as text: the document id for every input a worker accepts a key for."""
        if self.key is None:
            return "(no key)"
        return self.key.decode("utf-8", "replace")


def _int(text: str | None) -> int:
    try:
        return int(text) if text is not None else -1
    except ValueError:
        return -1


def parse(m: Message) -> DeadLetter:
    """The letter in a dead-letter topic's message. A message without the worker's headers (one
    written by something else) is kept with reason ``unknown``, not dropped."""
    headers = {k: v.decode("utf-8", "replace") for k, v in m.headers if v is not None}
    return DeadLetter(
        topic=m.topic,
        partition=m.partition,
        offset=m.offset,
        timestamp_ms=m.timestamp,
        key=m.key,
        value=m.value,
        reason=headers.get(REASON, UNKNOWN),
        detail=headers.get(DETAIL, ""),
        source_topic=headers.get(SOURCE_TOPIC, ""),
        source_partition=_int(headers.get(SOURCE_PARTITION)),
        source_offset=_int(headers.get(SOURCE_OFFSET)),
        value_kept=VALUE_BYTES not in headers,
    )


@dataclass(frozen=True, slots=True)
class OffsetRange:
    """Source offsets ``start``..``end`` (both included) of one input partition."""

    partition: int
    start: int
    end: int

    def holds(self, letter: DeadLetter) -> bool:
        return (
            letter.source_partition == self.partition
            and self.start <= letter.source_offset <= self.end
        )


_RANGE = re.compile(r"^(\d+):(\d+)?-(\d+)?$|^(\d+):(\d+)$")


def parse_range(text: str) -> OffsetRange:
    """``P:START-END``, ``P:START-``, ``P:-END`` or ``P:OFFSET`` (source partition and offsets)."""
    m = _RANGE.match(text.strip())
    if not m:
        raise ConfigError(
            f"--offsets {text!r}: expected PARTITION:START-END (e.g. 2:100-250, 2:100-, 2:-250 or 2:117)"
        )
    if m.group(4) is not None:
        return OffsetRange(int(m.group(4)), int(m.group(5)), int(m.group(5)))
    start = int(m.group(2)) if m.group(2) else 0
    end = int(m.group(3)) if m.group(3) else 2**63 - 1
    if end < start:
        raise ConfigError(f"--offsets {text!r}: the end is before the start")
    return OffsetRange(int(m.group(1)), start, end)


_AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, flag: str, now_ms: int) -> int:
    """ms since the epoch from an ISO 8601 time (UTC unless it says otherwise) or an age such as
    ``90m``, ``6h`` or ``2d`` (that long before ``now_ms``)."""
    value = text.strip()
    ago = _AGO.match(value)
    if ago:
        return now_ms - int(float(ago.group(1)) * _UNIT_S[ago.group(2)] * 1000)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"{flag} {text!r}: expected an ISO 8601 time (2026-12-01T09:30) or an age (90m, 6h, 2d)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


@dataclass(frozen=True)
class Selection:
    """Which letters a command takes: all of the given kinds must hold; an empty kind holds for
    every letter (no reasons given: every reason)."""

    reasons: frozenset[str] = frozenset()
    ids: frozenset[str] = frozenset()
    ranges: tuple[OffsetRange, ...] = ()
    since_ms: int | None = None
    until_ms: int | None = None  # excluded

    def matches(self, letter: DeadLetter) -> bool:
        if self.reasons and letter.reason not in self.reasons:
            return False
        if self.ids and letter.document_id not in self.ids:
            return False
        if self.ranges and not any(r.holds(letter) for r in self.ranges):
            return False
        if self.since_ms is not None and letter.timestamp_ms < self.since_ms:
            return False
        return self.until_ms is None or letter.timestamp_ms < self.until_ms

    def describe(self) -> str:
        parts = []
        if self.reasons:
            parts.append("reason " + " or ".join(sorted(self.reasons)))
        if self.ids:
            parts.append(f"{len(self.ids)} id(s)")
        if self.ranges:
            parts.append(
                "source offsets "
                + ", ".join(
                    f"{r.partition}:{r.start}-{r.end if r.end < 2**63 - 1 else ''}"
                    for r in self.ranges
                )
            )
        if self.since_ms is not None:
            parts.append(f"since {iso(self.since_ms)}")
        if self.until_ms is not None:
            parts.append(f"until {iso(self.until_ms)}")
        return ", ".join(parts) or "every dead letter"


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
