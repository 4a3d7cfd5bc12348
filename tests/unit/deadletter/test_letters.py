from __future__ import annotations

import pytest

from worker.deadletter.letters import OffsetRange, Selection, parse, parse_range, parse_time
from worker.errors import ConfigError
from worker.transport import Message

NOW = 1_796_000_000_000


def message(
    offset=0,
    *,
    key=b"doc-1",
    reason=b"encode_failed",
    partition=b"2",
    source_offset=b"117",
    ts=NOW,
    extra=(),
):
    headers = [
        *extra,
        ("embed-dlq-reason", reason),
        ("embed-dlq-detail", b"RuntimeError: boom"),
        ("embed-source-topic", b"documents"),
        ("embed-source-partition", partition),
        ("embed-source-offset", source_offset),
    ]
    return Message("documents.dlq", 0, offset, ts, key, b"value", headers)


def test_parse_reads_the_workers_headers():
    x = parse(message(5))
    assert (x.reason, x.detail, x.source_topic, x.source_partition, x.source_offset) == (
        "encode_failed",
        "RuntimeError: boom",
        "documents",
        2,
        117,
    )
    assert x.place == "documents.dlq/0/5" and x.document_id == "doc-1" and x.value_kept


def test_parse_keeps_a_foreign_message_as_unknown_and_marks_an_unkept_value():
    foreign = parse(Message("documents.dlq", 0, 1, NOW, None, b"?", []))
    assert foreign.reason == "unknown" and foreign.source_partition == -1
    assert foreign.document_id == "(no key)"
    assert not parse(message(extra=[("embed-dlq-value-bytes", b"9000000")])).value_kept


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2:100-250", OffsetRange(2, 100, 250)),
        ("2:117", OffsetRange(2, 117, 117)),
        ("0:-9", OffsetRange(0, 0, 9)),
        ("3:40-", OffsetRange(3, 40, 2**63 - 1)),
    ],
)
def test_parse_range(text, expected):
    assert parse_range(text) == expected


@pytest.mark.parametrize("text", ["2", "a:1-2", "2:9-3", "2:1-2-3", ""])
def test_parse_range_refuses_what_it_cannot_read(text):
    with pytest.raises(ConfigError, match="--offsets"):
        parse_range(text)


def test_parse_time_takes_iso_utc_and_ages():
    assert parse_time("2026-12-01T00:00:00Z", "--since", NOW) == 1_796_083_200_000
    assert parse_time("2026-12-01T00:00", "--since", NOW) == 1_796_083_200_000  # UTC by default
    assert parse_time("2026-12-01T01:00+01:00", "--since", NOW) == 1_796_083_200_000
    assert parse_time("90m", "--since", NOW) == NOW - 90 * 60_000
    assert parse_time("2d", "--since", NOW) == NOW - 2 * 86_400_000
    with pytest.raises(ConfigError, match="--until 'yesterday'"):
        parse_time("yesterday", "--until", NOW)


def test_selection_needs_every_given_kind():
    x = parse(message(ts=NOW))
    assert Selection().matches(x)
    assert Selection(reasons=frozenset({"encode_failed", "out_of_memory"})).matches(x)
    assert not Selection(reasons=frozenset({"undecodable"})).matches(x)
    assert Selection(ids=frozenset({"doc-1"}), ranges=(OffsetRange(2, 100, 117),)).matches(x)
    assert not Selection(ids=frozenset({"doc-1"}), ranges=(OffsetRange(1, 100, 117),)).matches(x)
    assert not Selection(ranges=(OffsetRange(2, 118, 200),)).matches(x)
    assert Selection(since_ms=NOW, until_ms=NOW + 1).matches(x)
    assert not Selection(until_ms=NOW).matches(x)  # until is excluded
    assert not Selection(since_ms=NOW + 1).matches(x)
    assert Selection().describe() == "every dead letter"
    assert "reason encode_failed" in Selection(reasons=frozenset({"encode_failed"})).describe()
