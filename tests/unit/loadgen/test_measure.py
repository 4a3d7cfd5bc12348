from loadgen.measure import Matcher, Published
from loadgen.report import compare_text, latency_summary
from worker.stats import percentile


def matcher_with(n):
    m = Matcher()
    for i in range(n):
        m.add_published(0, i, Published(f"d{i}", "upsert", sent_ms=1_000_000 + i))
    return m


def test_known_delays_give_exact_percentiles():
    m = matcher_with(100)
    for i in range(100):  # delay of offset i: (i + 1) × 10 ms, so 10 ms … 1000 ms
        assert m.answer((0, i), 1_000_000 + i + (i + 1) * 10)
    lat = latency_summary(m.latencies_s)
    assert (lat["p50"], lat["p90"], lat["p99"], lat["max"]) == (0.5, 0.9, 0.99, 1.0)
    assert lat["count"] == 100


def test_duplicates_dead_letters_missing_and_foreign_outputs():
    m = matcher_with(5)
    m.add_published(
        0, 5, Published("d0", "upsert", sent_ms=0)
    )  # d0 published again: a dedup skip, say
    assert m.answer((0, 0), 1_000_100)
    assert not m.answer((0, 0), 1_000_200)  # the same input answered twice
    assert m.answer((0, 1), 1_000_300, dlq_reason="empty_text")
    assert m.answer((0, 2), 1_000_400)
    assert not m.answer((9, 9), 5)  # an output of some other run
    assert (m.duplicates, m.foreign, dict(m.dead_letters)) == (1, 1, {"empty_text": 1})
    assert m.unanswered() == 3  # offsets 3, 4, 5
    assert m.missing_ids() == [
        "d3",
        "d4",
    ]  # d0's second message is unanswered but d0 is not missing
    assert len(m.latencies_s) == 2  # dead letters have no latency


def test_percentile_is_nearest_rank():
    assert percentile([5, 1, 4, 2, 3], 50) == 3
    assert percentile([1, 2, 3, 4], 50) == 2
    assert percentile([1, 2, 3, 4], 100) == 4
    assert percentile([], 50) is None


def test_compare_shows_ratios():
    def report(label, rate, p99):
        return {
            "label": label,
            "throughput": {"docs_per_s": rate, "tokens_per_s": rate * 10},
            "latency_s": {"p50": 0.1, "p90": 0.2, "p99": p99, "max": 1.0},
            "counts": {"missing_ids": 0, "duplicates": 0, "dead_lettered": 0},
            "lag": {"peak": 10},
        }

    text = compare_text(report("base", 100.0, 0.5), report("new", 150.0, 0.25))
    assert "1.50x" in text and "0.50x" in text and "base" in text and "new" in text
