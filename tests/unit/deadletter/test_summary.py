from __future__ import annotations

from tests.unit.deadletter.test_letters import NOW, message
from worker.deadletter.letters import parse
from worker.deadletter.summary import render, summarize


def test_summary_counts_by_reason_and_source_with_samples():
    letters = [
        parse(message(0, key=b"a", reason=b"encode_failed", partition=b"0", ts=NOW)),
        parse(message(1, key=b"b", reason=b"encode_failed", partition=b"1", ts=NOW + 5000)),
        parse(message(2, key=b"a", reason=b"encode_failed", partition=b"0", ts=NOW + 1000)),
        parse(message(3, key=b"c", reason=b"encode_failed", partition=b"0", ts=NOW + 2000)),
        parse(
            message(
                4,
                key=None,
                reason=b"key_missing",
                partition=b"1",
                ts=NOW + 3000,
                extra=[("embed-dlq-value-bytes", b"99")],
            )
        ),
    ]
    s = summarize(letters, samples=2, replayed={"documents.dlq/0/1", "documents.dlq/0/9"})
    assert s["total"] == 5 and s["not_replayable"] == 1 and s["replayed"] == 1
    assert s["first"] == "2026-11-30T00:53:20Z" and s["last"] == "2026-11-30T00:53:25Z"
    assert s["by_reason"] == [
        {
            "reason": "encode_failed",
            "count": 4,
            "replayed": 1,
            "sample_ids": ["a", "b"],
            "detail": "RuntimeError: boom",
        },
        {
            "reason": "key_missing",
            "count": 1,
            "replayed": 0,
            "sample_ids": ["(no key)"],
            "detail": "RuntimeError: boom",
        },
    ]
    assert s["by_source"] == [
        {"topic": "documents", "partition": 0, "count": 3},
        {"topic": "documents", "partition": 1, "count": 2},
    ]
    text = render(s, "documents.dlq", "every dead letter")
    assert "documents.dlq: 5 dead letters" in text and "encode_failed" in text
    assert "documents/0" in text and "1 of them kept no value" in text


def test_an_empty_summary_says_so():
    s = summarize([])
    assert s["total"] == 0 and s["by_reason"] == [] and s["first"] is None
    assert render(s, "documents.dlq", "reason x") == "documents.dlq: no dead letters (reason x)"
