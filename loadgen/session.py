"""One measured run: publish (open-loop or flat out) while collecting outputs, then report."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from loadgen.measure import Collector, LagSampler, Matcher, Published
from loadgen.publish import TopicSender, publish
from loadgen.rate import Schedule
from loadgen.report import histogram, latency_summary, per_second
from worker.config import Settings


def count_tokens(settings: Settings, docs: Sequence[dict]) -> list[int]:
    """Tokens each document costs the worker, by the worker's own tokenizer and truncation rules;
    whitespace words + 2 where the model's tokenizer is not available here."""
    texts = [d.get("text") or "" for d in docs]
    try:
        from worker.encode.transformer import TextTokenizer

        ids = TextTokenizer(settings.model).tokenize(texts)
    except Exception:
        return [len(t.split()) + 2 if t else 0 for t in texts]
    return [len(i) if t else 0 for i, t in zip(ids, texts)]


def run_measured(
    settings: Settings,
    docs: Sequence[dict],
    *,
    label: str,
    schedule: Schedule | None = None,
    settle_s: float = 15.0,
    timeout_s: float = 600.0,
    progress: Callable[[int], None] | None = None,
    config: dict | None = None,
) -> dict:
    k = settings.kafka
    tokens = count_tokens(settings, docs)
    collector = Collector(k, k.output_topic, k.dlq_topic, since_ms=int(time.time() * 1000) - 60_000)
    lag = LagSampler(k, k.group_id, k.input_topic)
    collector.start()
    lag.start()
    start = time.time()
    sender = TopicSender(k)
    try:
        pub = publish(
            sender,
            k.input_topic,
            docs,
            schedule=schedule,
            progress=progress,
            on_ack=lag.acknowledged,
        )
    finally:
        sender.close()

    matcher = Matcher()
    for partition, offset, i, sent_ms in pub.sent:
        matcher.add_published(
            partition,
            offset,
            Published(docs[i]["id"], docs[i].get("op", "upsert"), sent_ms, tokens[i]),
        )
    answer_times: list[float] = []
    last_news, deadline = time.monotonic(), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events = collector.take()
        for e in events:
            if matcher.answer(e.source, e.timestamp_ms, e.dlq_reason):
                answer_times.append(e.arrival_s)
        if events:
            last_news = time.monotonic()
        if matcher.unanswered() == 0 or time.monotonic() - last_news > settle_s:
            break
        if collector.error is not None:
            raise collector.error
        time.sleep(0.25)
    collector.stop()
    lag.stop()
    collector.join(timeout=5)
    lag.join(timeout=5)

    answered_tokens = sum(matcher.published[s].tokens for s in matcher.answered)
    span = (max(answer_times) - start) if answer_times else 0.0
    missing = matcher.missing_ids()
    dead = sum(matcher.dead_letters.values())
    return {
        "label": label,
        "config": {
            **(config or {}),
            "rate": schedule.rate if schedule else None,
            "documents": len(docs),
            "input_topic": k.input_topic,
            "output_topic": k.output_topic,
            "group": k.group_id,
        },
        "publish": {
            "messages": pub.messages,
            "seconds": round(pub.seconds, 3),
            "messages_per_s": round(pub.rate, 1),
            "late_s": round(pub.late_s, 3),
        },
        "counts": {
            "published": len(matcher.published),
            "outputs": len(matcher.answered) - dead,
            "dead_lettered": dead,
            "dead_letter_reasons": dict(matcher.dead_letters),
            "duplicates": matcher.duplicates,
            "unanswered": matcher.unanswered(),
            "missing_ids": len(missing),
            "tombstones": collector.tombstones,
        },
        "missing_sample": missing[:20],
        "latency_s": latency_summary(matcher.latencies_s),
        "throughput": {
            "docs_per_s": round(len(matcher.answered) / span, 2) if span else 0.0,
            "tokens_per_s": round(answered_tokens / span, 1) if span else 0.0,
            "seconds": round(span, 3),
        },
        "lag": {
            "samples": [[round(t - start, 2), n] for t, n in lag.samples],
            "peak": max((n for _, n in lag.samples), default=0),
            "final": lag.samples[-1][1] if lag.samples else 0,
        },
        "series": {
            "answers_per_s": per_second(answer_times, start),
            "published_per_s": per_second([s / 1000 for _, _, _, s in pub.sent], start),
            "latency_histogram": histogram(matcher.latencies_s),
        },
    }
