"""The main loop with the dummy encoder and in-memory stand-ins for Kafka and Redis."""

import random
import threading
import time

import numpy as np
import pytest

from worker.config import BatchSettings, KafkaSettings, Settings
from worker.consume.decode import content_hash, encode_document
from worker.encode.base import DummyEncoder
from worker.errors import DedupError, MessageTooLargeError, TransportError
from worker.observe.metrics import Metrics
from worker.publish.codec import OutMessage, decode_output
from worker.runner import Worker
from worker.transport.base import Record


class FakeConsumer:
    """Returns ``polls`` one consume call after another; ``events[i]`` are rebalance callbacks
    fired inside call i (0-based), before its records are returned, as the real clients do."""

    commits_on_revoke = True

    def __init__(self, polls, events=None):
        self.polls = list(polls)
        self.events = dict(events or {})
        self.calls = 0
        self.commits = []
        self.rewound = []
        self.owned = {("in", 0)}
        self.listener = None

    def subscribe(self, listener):
        self.listener = listener

    def rewind(self, tps, starts=None):
        self.rewound.append(set(tps))

    def settled(self):
        return True

    def hold(self, paused):
        pass

    def consume(self, max_records, timeout_s):
        for what, tps in self.events.pop(self.calls, []):
            if what == "assigned":
                self.owned |= tps
                self.listener.on_assigned(tps)
            else:
                getattr(self.listener, f"on_{what}")(tps)
                self.owned -= tps
        self.calls += 1
        if self.polls:
            return self.polls.pop(0)
        time.sleep(timeout_s)  # as a real consumer waits for records, releasing the GIL
        return []

    def assignment(self):
        return set(self.owned)

    def lag(self):
        return {("in", 0): len(self.polls)}

    def commit(self, offsets):
        self.commits.append(dict(offsets))

    def group_metadata(self):
        return "generation-1"


class FakeProducer:
    transactional = False

    def __init__(self):
        self.sent = []

    def produce(self, topic, key, value, headers, on_delivery):
        self.sent.append((topic, OutMessage(key, value, headers)))
        on_delivery(None)

    def poll(self):
        pass

    def flush(self, timeout_s):
        pass


class FakeDedup:
    def __init__(self):
        self.marks = {}
        self.errors = 0
        self.unchecked = 0

    def already_embedded(self, docs):
        return [self.marks.get(d.id) == d.dedup_value for d in docs]

    def mark(self, docs):
        for d in docs:
            if d.op == "delete":
                self.marks.pop(d.id, None)
            else:
                self.marks[d.id] = d.dedup_value
        return True

    def clear(self, docs):
        for d in docs:
            self.marks.pop(d.id, None)
        return True

    def waiting(self):
        return False


def records(*docs, start=0, partition=0):
    return [
        Record("in", partition, start + i, 1000, d[0].encode(), encode_document(*d))
        for i, d in enumerate(docs)
    ]


def run(polls, dedup=None, metrics=None, encoder=None, settings=None):
    settings = settings or Settings(
        kafka=KafkaSettings(commit_interval_ms=5), batch=BatchSettings(max_wait_ms=0, max_tokens=64)
    )
    intake, publisher, dedup = (
        FakeConsumer(polls, events={0: [("assigned", {("in", 0)})]}),
        FakeProducer(),
        dedup or FakeDedup(),
    )
    worker = Worker(settings, encoder or DummyEncoder(), intake, publisher, dedup, metrics=metrics)
    stats = worker.run(exit_when_idle_s=0.02)
    outputs = [
        (topic, decode_output(m.value) if topic == "embeddings" else m)
        for topic, m in publisher.sent
    ]
    return stats, outputs, intake, dedup


def test_every_document_comes_out_once_and_offsets_are_committed():
    stats, outputs, intake, _ = run(
        [records(("a", "alpha beta"), ("b", "gamma"), ("c", "delta epsilon zeta"))]
    )
    assert sorted(o["id"] for _, o in outputs) == ["a", "b", "c"]
    assert stats.embedded == 3
    assert intake.commits[-1] == {("in", 0): 3}


def test_versions_of_one_id_come_out_in_input_order():
    poll = records(("a", "one two three four five six"), ("a", "short"))
    poll.append(Record("in", 0, 2, 1000, b"a", encode_document("a", op="delete")))
    _, outputs, _, _ = run([poll])
    assert [(o["op"], o["source"]["offset"]) for _, o in outputs] == [
        ("upsert", 0),
        ("upsert", 1),
        ("delete", 2),
    ]


def test_unchanged_content_is_skipped_but_committed():
    dedup = FakeDedup()
    run([records(("a", "same text"), ("b", "other"))], dedup)
    stats, outputs, intake, _ = run([records(("a", "same text"), ("b", "changed"), start=2)], dedup)
    assert [o["id"] for _, o in outputs] == ["b"]
    assert stats.dedup_hits == 1
    assert intake.commits[-1] == {("in", 0): 4}


def test_a_document_changed_back_is_embedded_again():
    dedup = FakeDedup()
    run([records(("a", "version A"))], dedup)
    run([records(("a", "version B"), start=1)], dedup)
    _, outputs, _, _ = run([records(("a", "version A"), start=2)], dedup)
    assert [o["id"] for _, o in outputs] == ["a"]


def test_a_later_copy_behind_a_pending_change_is_not_skipped():
    # Redis says "a" is at content A; B then A arrive together. Skipping the second A against
    # the stale mark would leave B as the document's last vector.
    dedup = FakeDedup()
    run([records(("a", "version A"))], dedup)
    _, outputs, _, _ = run([records(("a", "version B"), ("a", "version A"), start=1)], dedup)
    assert [o["source"]["offset"] for _, o in outputs] == [1, 2]


def test_bad_messages_go_to_the_dead_letter_topic_and_are_committed():
    bad = Record("in", 0, 1, 1000, b"x", b"\xc1garbage")
    stats, outputs, intake, _ = run(
        [[records(("a", "fine"))[0], bad] + records(("c", "also fine"), start=2)]
    )
    topics = [t for t, _ in outputs]
    assert topics.count("documents.dlq") == 1 and topics.count("embeddings") == 2
    assert stats.dead_lettered == {"undecodable": 1}
    assert intake.commits[-1] == {("in", 0): 3}


def test_metrics_follow_the_run():
    from worker.observe.metrics import Metrics

    m = Metrics()
    bad = Record("in", 0, 2, 1000, b"x", b"\xc1")
    poll = records(("a", "alpha beta"), ("b", "gamma")) + [bad]
    poll.append(Record("in", 0, 3, 1000, b"c", encode_document("c", op="delete")))
    run([poll], metrics=m)
    value = m.registry.get_sample_value
    assert value("embed_input_messages_total") == 4
    assert value("embed_documents_total") == 2
    assert value("embed_tokens_total") == 3
    assert value("embed_deletes_total") == 1
    assert value("embed_dlq_messages_total", {"reason": "undecodable"}) == 1
    assert (
        value("embed_batch_size_count") == value("embed_batches_total", {"reason": "deadline"}) >= 1
    )
    assert value("embed_stage_duration_seconds_count", {"stage": "forward"}) >= 1
    assert value("embed_stage_duration_seconds_count", {"stage": "commit"}) >= 1
    assert (
        value("embed_end_to_end_latency_seconds_count") == 3
    )  # two vectors and a delete, not the dead letter
    assert value("embed_commit_duration_seconds_count") >= 1
    assert value("embed_rebalances_total") == 1
    assert value("embed_inflight_documents") == 0


class OomEncoder(DummyEncoder):
    """Runs out of accelerator memory (torch's own error type) above two rows, or on any document
    of more than 10 tokens even alone."""

    def encode(self, token_ids):
        import torch

        if len(token_ids) > 2 or any(len(ids) > 10 for ids in token_ids):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().encode(token_ids)


class PoisonEncoder(DummyEncoder):
    def encode(self, token_ids):
        if any(len(ids) == 7 for ids in token_ids):
            raise ValueError("the model cannot take this one")
        return super().encode(token_ids)


def test_out_of_memory_splits_the_batch_until_it_fits_and_dead_letters_what_never_does():
    from worker.observe.metrics import Metrics

    m = Metrics()
    docs = [(f"d{i}", "word " * 3) for i in range(8)] + [("huge", "word " * 12)]
    _stats, outputs, intake, _ = run([records(*docs)], metrics=m, encoder=OomEncoder())
    vectors = sorted(o["id"] for t, o in outputs if t == "embeddings")
    assert vectors == [f"d{i}" for i in range(8)]
    letters = [o for t, o in outputs if t == "documents.dlq"]
    assert len(letters) == 1 and dict(letters[0].headers)["embed-dlq-reason"] == b"out_of_memory"
    assert m.registry.get_sample_value("embed_oom_splits_total") >= 3
    assert intake.commits[-1] == {
        ("in", 0): 9
    }  # everything published or dead-lettered, all committed
    # the split parts count as batches: every vector is in one, and each is one forward pass
    value = m.registry.get_sample_value
    passes = sum(
        value("embed_batches_total", {"reason": r})
        for r in ("token_budget", "size", "deadline", "drain")
    )
    assert value("embed_batch_size_sum") == value("embed_documents_total") == 8
    assert (
        value("embed_batch_size_count")
        == passes
        == value("embed_stage_duration_seconds_count", {"stage": "forward"})
        >= 4
    )
    assert value("embed_batch_unpadded_tokens_sum") == value("embed_tokens_total")


def test_other_model_errors_retry_one_by_one():
    docs = [("a", "one two three"), ("b", "one two three four five six seven"), ("c", "x y")]
    stats, outputs, intake, _ = run([records(*docs)], encoder=PoisonEncoder())
    assert sorted(o["id"] for t, o in outputs if t == "embeddings") == ["a", "c"]
    assert stats.dead_lettered == {"encode_failed": 1}
    assert intake.commits[-1] == {("in", 0): 3}


class NanEncoder(DummyEncoder):
    """An fp16 overflow, as the runner sees it: a batch holding the 5-token document comes back NaN."""

    def encode(self, token_ids):
        out = super().encode(token_ids)
        if any(len(ids) == 5 for ids in token_ids):
            out[:] = np.nan
        return out


def test_non_finite_vectors_are_never_published():
    docs = [("a", "one two"), ("b", "one two three four five"), ("c", "x y z")]
    _stats, outputs, intake, _ = run([records(*docs)], encoder=NanEncoder())
    vectors = {o["id"]: o["vector"] for t, o in outputs if t == "embeddings"}
    assert sorted(vectors) == ["a", "c"]
    assert all(np.isfinite(v).all() for v in vectors.values())
    letters = [dict(m.headers) for t, m in outputs if t == "documents.dlq"]
    assert len(letters) == 1 and letters[0]["embed-dlq-reason"] == b"encode_failed"
    assert b"non-finite" in letters[0]["embed-dlq-detail"]
    assert intake.commits[-1] == {("in", 0): 3}


class JitterEncoder(DummyEncoder):
    """Two replicas whose batches take a random time, so the forward threads finish out of order."""

    replicas = 2

    def __init__(self):
        super().__init__()
        self.rng = random.Random(7)
        self.lock = threading.Lock()

    def encode(self, token_ids):
        with self.lock:
            delay = self.rng.uniform(0, 0.01)
        time.sleep(delay)
        return super().encode(token_ids)


def test_versions_of_one_id_stay_in_order_with_two_replicas():
    rng = random.Random(3)
    polls, offset = [], 0
    for _ in range(20):  # 20 polls of 10 messages over 5 ids, of random lengths
        docs = [(f"id{rng.randrange(5)}", " ".join(["w"] * rng.randint(1, 30))) for _ in range(10)]
        polls.append(records(*docs, start=offset))
        offset += len(docs)
    settings = Settings(
        kafka=KafkaSettings(commit_interval_ms=5),
        batch=BatchSettings(max_wait_ms=0, max_tokens=64),
    )
    stats, outputs, intake, _ = run(polls, encoder=JitterEncoder(), settings=settings)
    offsets_by_id: dict[str, list[int]] = {}
    for _, o in outputs:
        offsets_by_id.setdefault(o["id"], []).append(o["source"]["offset"])
    assert (
        sum(len(v) for v in offsets_by_id.values()) + stats.dedup_hits == offset
    )  # a repeat of the text just embedded is skipped
    assert all(v == sorted(v) for v in offsets_by_id.values()), offsets_by_id
    assert stats.batches > 20  # many batches were in flight at once
    assert intake.commits[-1] == {("in", 0): offset}


class LengthRecorder(DummyEncoder):
    """Keeps each batch's token lengths; each batch takes ``seconds``."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds
        self.lengths: list[list[int]] = []

    def encode(self, token_ids):
        self.lengths.append([len(t) for t in token_ids])
        time.sleep(self.seconds)
        return super().encode(token_ids)


class PacedConsumer(FakeConsumer):
    """Poll i becomes available ``every_s`` × i after the first call, as a steady stream arrives."""

    def __init__(self, polls, every_s, events=None):
        super().__init__([], events)
        self.pending = list(polls)
        self.every_s = every_s
        self.started = None
        self.released = 0

    def consume(self, max_records, timeout_s):
        self.started = self.started or time.monotonic()
        due = int((time.monotonic() - self.started) / self.every_s) + 1
        while self.pending and self.released < due:
            self.polls.append(self.pending.pop(0))
            self.released += 1
        return super().consume(max_records, min(timeout_s, 0.001))


def test_a_busy_model_gets_batches_of_close_lengths_chosen_from_all_that_gathered():
    # documents of 1-40 words arrive ten every 2 ms while each batch takes 20 ms, with a deadline of
    # 0: cut as they arrive, batches would hold ten random lengths; chosen when the model frees, from
    # everything that waited meanwhile, they hold close lengths
    rng = random.Random(5)
    polls = [
        records(
            *[(f"d{p}-{i}", " ".join(["w"] * rng.randint(1, 40))) for i in range(10)], start=p * 10
        )
        for p in range(60)
    ]
    encoder = LengthRecorder(0.02)
    settings = Settings(
        kafka=KafkaSettings(commit_interval_ms=5),
        batch=BatchSettings(max_wait_ms=0, max_tokens=256),
    )
    intake, publisher = (
        PacedConsumer(polls, 0.002, events={0: [("assigned", {("in", 0)})]}),
        FakeProducer(),
    )
    Worker(settings, encoder, intake, publisher, FakeDedup()).run(exit_when_idle_s=0.05)
    assert len(publisher.sent) == 600 and intake.commits[-1] == {("in", 0): 600}
    real = sum(sum(b) for b in encoder.lengths)
    padded = sum(max(b) * len(b) for b in encoder.lengths)
    assert real / padded > 0.85, (real / padded, encoder.lengths[:5])


class SlowEncoder(DummyEncoder):
    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds
        self.started = threading.Event()

    def encode(self, token_ids):
        self.started.set()
        time.sleep(self.seconds)
        return super().encode(token_ids)


def _stop_during_a_batch(grace_s):
    settings = Settings(
        kafka=KafkaSettings(commit_interval_ms=5),
        batch=BatchSettings(max_wait_ms=0, max_tokens=64),
        shutdown_grace_s=grace_s,
    )
    intake, publisher, encoder, stop = (
        FakeConsumer([records(("a", "alpha beta"), ("b", "gamma"))]),
        FakeProducer(),
        SlowEncoder(0.5),
        threading.Event(),
    )
    worker = Worker(settings, encoder, intake, publisher, FakeDedup(), stop)
    threading.Thread(target=lambda: encoder.started.wait(5) and stop.set(), daemon=True).start()
    began = time.monotonic()
    worker.run()
    return time.monotonic() - began, publisher, intake


def test_on_stop_the_batch_in_flight_is_published_and_committed_within_the_grace():
    seconds, publisher, intake = _stop_during_a_batch(grace_s=5)
    assert sorted(decode_output(m.value)["id"] for _, m in publisher.sent) == ["a", "b"]
    assert intake.commits[-1] == {("in", 0): 2}
    assert seconds < 5


def test_a_batch_that_outlasts_the_grace_is_abandoned_uncommitted():
    seconds, publisher, intake = _stop_during_a_batch(grace_s=0.05)
    assert publisher.sent == []
    assert all(c.get(("in", 0), 0) == 0 for c in intake.commits)
    assert seconds < 0.5  # the worker did not wait for the model


class FailingPublisher(FakeProducer):
    """Sends of the listed ids fail once each (as a send does when the broker stays away past the
    delivery timeout)."""

    def __init__(self, fail_ids):
        super().__init__()
        self.fail = set(fail_ids)

    def produce(self, topic, key, value, headers, on_delivery):
        if key and key.decode() in self.fail:
            self.fail.discard(key.decode())
            on_delivery(TransportError("Batch expired"))
            return
        super().produce(topic, key, value, headers, on_delivery)


class RereadIntake(FakeConsumer):
    """A rewind makes the consumer read ``reread`` next, as it would from the committed offset."""

    def __init__(self, polls, reread):
        super().__init__(polls)
        self.reread = reread
        self.commits_before_rewind = None

    def rewind(self, tps, starts=None):
        super().rewind(tps)
        if self.commits_before_rewind is None:
            self.commits_before_rewind = list(self.commits)
            self.polls.insert(0, self.reread)


def test_a_failed_publish_commits_nothing_past_it_and_everything_is_read_again_from_the_commit():
    first = records(("a", "alpha"), ("b", "beta"), ("c", "gamma"))
    again = records(("b", "beta"), ("c", "gamma"), start=1)
    settings = Settings(
        kafka=KafkaSettings(commit_interval_ms=5), batch=BatchSettings(max_wait_ms=0, max_tokens=64)
    )
    intake, publisher, metrics = RereadIntake([first], again), FailingPublisher({"b"}), Metrics()
    stats = Worker(settings, DummyEncoder(), intake, publisher, FakeDedup(), metrics=metrics).run(
        exit_when_idle_s=0.05
    )
    assert intake.rewound == [{("in", 0)}]
    assert all(
        c[("in", 0)] <= 1 for c in intake.commits_before_rewind
    )  # never past the failed "b" at offset 1
    assert intake.commits[-1] == {("in", 0): 3}
    assert {decode_output(m.value)["id"] for _, m in publisher.sent} == {"a", "b", "c"}
    assert metrics.publish_failures._value.get() == 1 and stats.embedded >= 3


class SlowOnceEncoder(DummyEncoder):
    """Two replicas; the first batch holding the word ``slowword`` takes ``seconds``, the rest run
    at once."""

    replicas = 2

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds
        self.slow = self.body(["slowword"])[0][0]

    def encode(self, token_ids):
        if self.seconds and any(self.slow in ids for ids in token_ids):
            seconds, self.seconds = self.seconds, 0
            time.sleep(seconds)
        return super().encode(token_ids)


def test_a_batch_of_the_old_reading_on_a_slow_replica_cannot_publish_after_the_newer_version():
    # "a" fails to publish while x's first version is on the other replica, slower than the
    # backoff: the re-read must wait for it, or that old version lands after x's newer one
    first = records(("a", "alpha"), ("x", "slowword one"))
    again = records(("a", "alpha"), ("x", "slowword one"), ("x", "two"))
    settings = Settings(
        kafka=KafkaSettings(commit_interval_ms=5),
        batch=BatchSettings(max_wait_ms=0, max_tokens=64, max_size=1),
    )
    intake, publisher = RereadIntake([first], again), FailingPublisher({"a"})
    Worker(settings, SlowOnceEncoder(1.5), intake, publisher, FakeDedup()).run(
        exit_when_idle_s=0.05
    )
    x = [decode_output(m.value)["source"]["offset"] for _, m in publisher.sent if m.key == b"x"]
    assert x == sorted(x) and x[-1] == 2, x  # the newest version is the last one published
    assert intake.commits[-1] == {("in", 0): 3}


class ClosedDedup(FakeDedup):
    """Redis down for ``down_s``, with EMBED_REDIS__ON_ERROR=closed."""

    def __init__(self, down_s):
        super().__init__()
        self.up_at = time.monotonic() + down_s
        self.refused = 0

    def already_embedded(self, docs):
        if time.monotonic() < self.up_at:
            self.refused += 1
            raise DedupError("Redis unavailable")
        return super().already_embedded(docs)


class TimedPublisher(FakeProducer):
    def __init__(self):
        super().__init__()
        self.times = []

    def produce(self, topic, key, value, headers, on_delivery):
        self.times.append(time.monotonic())
        super().produce(topic, key, value, headers, on_delivery)


class HoldingIntake(FakeConsumer):
    def __init__(self, polls):
        super().__init__(polls)
        self.holds = []

    def hold(self, paused):
        self.holds.append(paused)


def test_with_redis_down_and_fail_closed_nothing_is_embedded_until_it_answers():
    settings = Settings(
        kafka=KafkaSettings(commit_interval_ms=5), batch=BatchSettings(max_wait_ms=0, max_tokens=64)
    )
    intake, publisher, dedup = (
        HoldingIntake([records(("a", "alpha"), ("b", "beta"))]),
        TimedPublisher(),
        ClosedDedup(0.3),
    )
    Worker(settings, DummyEncoder(), intake, publisher, dedup).run(exit_when_idle_s=0.05)
    assert (
        dedup.refused > 1 and True in intake.holds
    )  # asked again and again, consumption paused meanwhile
    assert publisher.times and min(publisher.times) >= dedup.up_at
    assert sorted(decode_output(m.value)["id"] for _, m in publisher.sent) == ["a", "b"]
    assert intake.commits[-1] == {("in", 0): 2}


class PollLog(HoldingIntake):
    """Remembers, for each consume call, whether consumption was paused at the time."""

    def __init__(self, polls):
        super().__init__(polls)
        self.paused_at_call = []

    def consume(self, max_records, timeout_s):
        self.paused_at_call.append(bool(self.holds and self.holds[-1]))
        return super().consume(max_records, timeout_s)


def _hold_for_room(monkeypatch, pause_after_s):
    """Six documents one by one against a two-document in-flight limit and a slow model: the
    loop must wait for room again and again, each time for about one batch (0.15 s)."""
    import worker.runner

    monkeypatch.setattr(worker.runner, "PAUSE_AFTER_S", pause_after_s)
    settings = Settings(
        kafka=KafkaSettings(commit_interval_ms=5),
        batch=BatchSettings(max_wait_ms=0, max_tokens=64, max_size=1, max_pending=2),
    )
    intake = PollLog([records((f"d{i}", f"text {i}"), start=i) for i in range(6)])
    stats = Worker(settings, SlowEncoder(0.15), intake, FakeProducer(), FakeDedup()).run(
        exit_when_idle_s=0.05
    )
    assert stats.embedded == 6 and intake.commits[-1] == {("in", 0): 6}
    return intake


def test_a_short_wait_for_room_skips_polling_instead_of_pausing(monkeypatch):
    # librdkafka drops a paused partition's prefetched records: pausing for every short wait for
    # room made intake fetch everything again, and stall, each time
    intake = _hold_for_room(monkeypatch, pause_after_s=10)
    assert True not in intake.holds
    assert not any(intake.paused_at_call)


def test_a_long_wait_for_room_pauses_and_keeps_polling_for_rebalances(monkeypatch):
    intake = _hold_for_room(monkeypatch, pause_after_s=0.01)
    assert True in intake.holds
    assert sum(intake.paused_at_call) > 3  # paused, and still polled


class SmallMessagePublisher(FakeProducer):
    """A producer whose largest message is ``limit`` bytes."""

    def __init__(self, limit):
        super().__init__()
        self.limit = limit

    def produce(self, topic, key, value, headers, on_delivery):
        if len(value or b"") > self.limit:
            raise MessageTooLargeError(f"{len(value)} bytes")
        super().produce(topic, key, value, headers, on_delivery)


def test_an_output_too_large_to_publish_is_dead_lettered_and_the_rest_goes_on():
    small = records(("a", "alpha"))
    big = Record(
        "in", 0, 1, 1000, b"b", encode_document("b", "beta", metadata={"blob": "x" * 5000})
    )
    huge = Record(
        "in", 0, 2, 1000, b"c", encode_document("c", "gamma", metadata={"blob": "x" * 50_000})
    )
    settings = Settings(
        kafka=KafkaSettings(commit_interval_ms=5), batch=BatchSettings(max_wait_ms=0, max_tokens=64)
    )
    intake, publisher = FakeConsumer([small + [big, huge]]), SmallMessagePublisher(20_000)
    stats = Worker(settings, DummyEncoder(), intake, publisher, FakeDedup()).run(
        exit_when_idle_s=0.02
    )
    vectors = sorted(decode_output(m.value)["id"] for t, m in publisher.sent if t == "embeddings")
    dead = [m for t, m in publisher.sent if t != "embeddings"]
    assert vectors == ["a", "b"]
    assert len(dead) == 1 and dict(dead[0].headers)["embed-dlq-reason"] == b"output_too_large"
    assert (
        dead[0].value == b""
        and dict(dead[0].headers)["embed-dlq-value-bytes"] == str(len(huge.value)).encode()
    )  # too big to carry
    assert stats.dead_lettered["output_too_large"] == 1 and intake.commits[-1] == {("in", 0): 3}


class TxnPublisher(FakeProducer):
    """A transactional producer: records what each committed transaction held, and aborts."""

    transactional = True

    def __init__(self):
        super().__init__()
        self.open, self.committed, self.aborts = [], [], 0

    def produce(self, topic, key, value, headers, on_delivery):
        self.open.append(
            decode_output(value)["source"]["offset"]
            if topic == "embeddings"
            else int(dict(headers)["embed-source-offset"])
        )
        super().produce(topic, key, value, headers, on_delivery)

    def commit_transaction(self, offsets, group_metadata):
        assert group_metadata == "generation-1"
        self.committed.append((dict(offsets), sorted(self.open)))
        self.open = []

    def abort_transaction(self):
        self.aborts += 1
        self.open = []


class TxnIntake(FakeConsumer):
    """Honours pausing, as the real consumer does: a paused poll returns nothing."""

    paused = False

    def hold(self, paused):
        self.paused = paused

    def consume(self, max_records, timeout_s):
        if self.paused and self.calls not in self.events:
            time.sleep(timeout_s)
            return []
        time.sleep(0.004)  # records trickle in: several commit intervals pass during the run
        return super().consume(max_records, timeout_s)


def eos_settings():
    return Settings(
        kafka=KafkaSettings(commit_interval_ms=5, exactly_once=True),
        batch=BatchSettings(max_wait_ms=1000, max_tokens=16),
    )


def test_exactly_once_transactions_hold_exactly_the_outputs_of_the_offsets_they_commit():
    # sorted batches finish out of order; a long deadline would leave documents waiting at a commit
    texts = [" ".join(["w"] * random.Random(i).randint(1, 6)) for i in range(40)]
    recs = records(*[(f"d{i}", texts[i]) for i in range(40)])
    recs[13] = Record("in", 0, 13, 1000, b"x", b"\xc1 not msgpack")  # a dead letter inside the run
    polls = [recs[k : k + 10] for k in range(0, 40, 10)]
    intake, publisher, dedup = TxnIntake(polls), TxnPublisher(), FakeDedup()
    Worker(eos_settings(), DummyEncoder(), intake, publisher, dedup).run(exit_when_idle_s=0.05)
    assert intake.commits == []  # the consumer never commits on its own: only transactions do
    previous = 0
    for offsets, outputs in publisher.committed:
        end = offsets.get(("in", 0), previous)
        assert outputs == list(range(previous, end)), (previous, end, outputs)
        previous = end
    assert previous == 40 and publisher.open == [] and len(publisher.committed) > 1
    assert len(dedup.marks) == 39  # marked once their transaction committed


def test_exactly_once_a_rebalance_aborts_the_open_transaction_and_reads_again_from_the_commit():
    first = records(("a", "alpha"), ("b", "beta"))
    events = {
        3: [("revoked", {("in", 0)})],
        4: [("assigned", {("in", 0)})],
    }  # after "a" and "b" went out
    intake, publisher = (
        TxnIntake([first, [], [], [], records(("a", "alpha"), ("b", "beta"))], events),
        TxnPublisher(),
    )
    settings = Settings(
        kafka=KafkaSettings(commit_interval_ms=2000, exactly_once=True),
        batch=BatchSettings(max_wait_ms=0, max_tokens=64),
    )
    Worker(settings, DummyEncoder(), intake, publisher, FakeDedup()).run(exit_when_idle_s=0.05)
    assert publisher.aborts >= 1
    assert publisher.committed[-1][0] == {("in", 0): 2}


# -- the defects the core-loop rebuild fixed: each of these failed on the loop before it ---------------


class RewindingTxnIntake(TxnIntake):
    """A rewind makes the consumer read from offset 0 again (nothing was committed yet)."""

    def __init__(self, polls, events, reread):
        super().__init__(polls, events)
        self.reread = reread

    def rewind(self, tps, starts=None):
        super().rewind(tps)
        self.polls.insert(0, self.reread)


def committed_exactly(publisher):
    """Each committed transaction holds exactly the outputs of the offsets it moved past."""
    previous = 0
    for offsets, outputs in publisher.committed:
        end = offsets.get(("in", 0), previous)
        assert outputs == list(range(previous, end)), (previous, end, outputs)
        previous = end
    return previous


def test_exactly_once_records_read_from_the_old_position_in_the_call_that_rewinds_are_left_out():
    # cooperative-sticky: partition 1 arrives while 0 is owned; the abort rewinds 0, but the same
    # consume call still returns records of 0 read from the old position (4, 5)
    first = records(*[(f"d{i}", f"text {i}") for i in range(4)])
    stale = records(("d4", "text 4"), ("d5", "text 5"), start=4)
    everything = records(*[(f"d{i}", f"text {i}") for i in range(6)])
    intake = RewindingTxnIntake([first, stale], {1: [("assigned", {("in", 1)})]}, everything)
    publisher = TxnPublisher()
    settings = Settings(
        kafka=KafkaSettings(commit_interval_ms=5, exactly_once=True),
        batch=BatchSettings(max_wait_ms=0, max_tokens=64),
    )
    Worker(settings, DummyEncoder(), intake, publisher, FakeDedup()).run(exit_when_idle_s=0.05)
    assert publisher.aborts >= 1
    assert committed_exactly(publisher) == 6


def test_exactly_once_two_replicas_keep_the_versions_of_an_id_in_order():
    rng = random.Random(5)
    polls, offset = [], 0
    for _ in range(10):
        docs = [
            (f"id{rng.randrange(3)}", " ".join(["w"] * rng.randint(1, 12)) + f" {offset + i}")
            for i in range(8)
        ]
        polls.append(records(*docs, start=offset))
        offset += len(docs)
    settings = Settings(
        kafka=KafkaSettings(commit_interval_ms=5, exactly_once=True),
        batch=BatchSettings(max_wait_ms=0, max_tokens=16),
    )
    intake, publisher = TxnIntake(polls), TxnPublisher()
    stats = Worker(settings, JitterEncoder(), intake, publisher, FakeDedup()).run(
        exit_when_idle_s=0.05
    )
    assert committed_exactly(publisher) == offset
    seen: dict[str, list[int]] = {}
    for _, m in publisher.sent:
        o = decode_output(m.value)
        seen.setdefault(o["id"], []).append(o["source"]["offset"])
    assert all(v == sorted(v) for v in seen.values()), seen
    assert stats.batches > 10


def test_exactly_once_a_version_changed_back_within_one_transaction_is_not_skipped():
    # Redis holds x=A; X=B then X=A arrive in one commit interval: A must come out after B
    dedup = FakeDedup()
    dedup.marks["x"] = content_hash("version A")
    intake, publisher = TxnIntake([records(("x", "version B"), ("x", "version A"))]), TxnPublisher()
    settings = Settings(
        kafka=KafkaSettings(commit_interval_ms=50, exactly_once=True),
        batch=BatchSettings(max_wait_ms=0, max_tokens=64),
    )
    Worker(settings, DummyEncoder(), intake, publisher, dedup).run(exit_when_idle_s=0.05)
    assert [decode_output(m.value)["source"]["offset"] for _, m in publisher.sent] == [0, 1]


class RevokeAtCommit(TxnIntake):
    """Partition 1 is revoked inside the consume call of the loop iteration that commits."""

    def consume(self, max_records, timeout_s):
        if self.calls >= 2 and ("in", 1) in self.owned and self.listener._draining:
            self.events[self.calls] = [("revoked", {("in", 1)})]
        return super().consume(max_records, timeout_s)


def test_exactly_once_a_revocation_during_the_poll_is_handled_before_the_commit_of_that_iteration():
    polls = [
        records(("a", "alpha"), ("b", "beta"))
        + records(("c", "gamma"), ("d", "delta"), partition=1)
    ]
    intake, publisher = RevokeAtCommit(polls), TxnPublisher()
    intake.owned = {("in", 0), ("in", 1)}
    settings = Settings(
        kafka=KafkaSettings(commit_interval_ms=5, exactly_once=True),
        batch=BatchSettings(max_wait_ms=0, max_tokens=64),
    )
    Worker(settings, DummyEncoder(), intake, publisher, FakeDedup()).run(exit_when_idle_s=0.05)
    for offsets, outputs in publisher.committed:  # never outputs of partition 1 without its offsets
        assert ("in", 1) in offsets or len(outputs) <= offsets.get(("in", 0), 0), (offsets, outputs)


class RefusingProducer(FakeProducer):
    """The first send of "b" cannot even be queued (a full buffer, or no metadata in time)."""

    def __init__(self):
        super().__init__()
        self.refused = False

    def produce(self, topic, key, value, headers, on_delivery):
        if key == b"b" and not self.refused:
            self.refused = True
            raise TransportError("queue full")
        super().produce(topic, key, value, headers, on_delivery)


def test_a_send_the_producer_refuses_backs_off_and_redoes_from_the_commit_instead_of_exiting():
    first = records(("a", "alpha"), ("b", "beta"), ("c", "gamma"))
    intake, publisher = (
        RereadIntake([first], records(("b", "beta"), ("c", "gamma"), start=1)),
        RefusingProducer(),
    )
    stats = Worker(
        Settings(
            kafka=KafkaSettings(commit_interval_ms=5),
            batch=BatchSettings(max_wait_ms=0, max_tokens=64),
        ),
        DummyEncoder(),
        intake,
        publisher,
        FakeDedup(),
    ).run(exit_when_idle_s=0.05)
    assert publisher.refused and intake.rewound == [{("in", 0)}]
    assert {decode_output(m.value)["id"] for _, m in publisher.sent} == {"a", "b", "c"}
    assert intake.commits[-1] == {("in", 0): 3} and stats.embedded >= 3


class ReadFromCommit(FakeConsumer):
    """A rewind makes the consumer read ``log`` again from the last committed offset."""

    def __init__(self, polls, log):
        super().__init__(polls)
        self.log = log

    def rewind(self, tps, starts=None):
        super().rewind(tps)
        committed = self.commits[-1].get(("in", 0), 0) if self.commits else 0
        self.polls.insert(0, [r for r in self.log if r.offset >= committed])


def test_a_partition_revoked_and_assigned_back_in_one_consume_call_is_read_again_from_its_commit():
    # the call's records of it may come from before or after the change: all left out, then re-read
    log = records(("a", "alpha"), ("b", "beta"), ("c", "gamma"))
    intake, publisher = ReadFromCommit([log[:1], [], log[1:]], log), FakeProducer()
    intake.events = {2: [("revoked", {("in", 0)}), ("assigned", {("in", 0)})]}
    settings = Settings(
        kafka=KafkaSettings(commit_interval_ms=5), batch=BatchSettings(max_wait_ms=0, max_tokens=64)
    )
    Worker(settings, DummyEncoder(), intake, publisher, FakeDedup()).run(exit_when_idle_s=0.05)
    assert {("in", 0)} in intake.rewound
    assert {decode_output(m.value)["id"] for _, m in publisher.sent} == {"a", "b", "c"}
    assert intake.commits[-1] == {("in", 0): 3}


class TimedRebalance(FakeConsumer):
    """Rebalance events by time since the first call: ``script`` is [(seconds, what, tps, records)],
    each fired inside the first consume call at or after its time; its records come back with it."""

    commits_on_revoke = False  # as kafka-python: the revocation is reported after the fact

    def __init__(self, polls, script):
        super().__init__(polls)
        self.script = list(script)
        self.began = None

    def consume(self, max_records, timeout_s):
        self.began = self.began or time.monotonic()
        if self.script and time.monotonic() - self.began >= self.script[0][0]:
            _, what, tps, recs = self.script.pop(0)
            if what == "assigned":
                self.owned = set(tps)
                self.listener.on_assigned(tps)
            else:  # kafka-python's assignment() lists the revoked partitions until the join completes
                self.listener.on_revoked(tps)
            if recs:
                return recs
        return super().consume(max_records, timeout_s)


def test_a_worker_does_not_exit_idle_between_a_revocation_and_the_assignment_that_follows():
    # Eager rebalance after another member left: partitions revoked, then assigned back (with
    # the left member's) a moment later. The idle clock ran on through the revocation, so the
    # worker exited in between, its uncommitted documents dropped (seen with kafka-python).
    settings = Settings(
        kafka=KafkaSettings(commit_interval_ms=5), batch=BatchSettings(max_wait_ms=0, max_tokens=64)
    )
    script = [
        (0.0, "assigned", {("in", 0)}, []),
        (0.25, "revoked", {("in", 0)}, []),
        (
            0.45,
            "assigned",
            {("in", 0), ("in", 1)},
            records(("late", "after the rebalance"), partition=1),
        ),
    ]
    intake, publisher = TimedRebalance([records(("a", "alpha"))], script), FakeProducer()
    Worker(settings, DummyEncoder(), intake, publisher, FakeDedup()).run(exit_when_idle_s=0.3)
    assert sorted(decode_output(m.value)["id"] for _, m in publisher.sent) == ["a", "late"]
    assert intake.commits[-1] == {
        ("in", 1): 1
    }  # partition 0's offset 1 was committed before the rebalance


# -- data safety: what the index ends up holding -----------------------------------------------------


class FlakyDedup(FakeDedup):
    """Redis that is ``down`` while the test says so: lookups fail open (or raise, ``closed``),
    writes are not made, and the store says it is backing off."""

    def __init__(self, closed=False):
        super().__init__()
        self.down, self.closed, self.refused = False, closed, 0

    def already_embedded(self, docs):
        if self.down:
            self.refused += 1
            if self.closed:
                raise DedupError("Redis unavailable")
            return [False] * len(docs)
        return super().already_embedded(docs)

    def mark(self, docs):
        return False if self.down else super().mark(docs)

    def clear(self, docs):
        return False if self.down else super().clear(docs)

    def waiting(self):
        return self.down


class Steps(FakeConsumer):
    """Serves ``log`` as far as the steps have opened it: each step is (ready, action, end), taken
    at the first consume call at which ``ready()`` holds (``action()`` runs, and the log is open up
    to offset ``end``). A paused consumer returns nothing; a rewind reads again from ``committed()``."""

    def __init__(self, log, steps, committed=None):
        super().__init__([], events={0: [("assigned", {("in", 0)})]})
        self.log, self.steps, self.pos, self.limit = log, list(steps), 0, 0
        self.committed_offset = committed or (
            lambda: self.commits[-1].get(("in", 0), 0) if self.commits else 0
        )
        self.paused = False

    def hold(self, paused):
        self.paused = paused

    def rewind(self, tps, starts=None):
        super().rewind(tps)
        self.pos = self.committed_offset()

    def consume(self, max_records, timeout_s):
        for _what, tps in self.events.pop(self.calls, []):
            self.listener.on_assigned(tps)
        self.calls += 1
        if self.steps and self.steps[0][0]():
            _, action, self.limit = self.steps.pop(0)
            action()
        out = [] if self.paused else self.log[self.pos : self.limit]
        self.pos += len(out)
        if not out:
            time.sleep(min(timeout_s, 0.005))
        return out


def bounded_run(worker, limit_s=20.0, idle_s=0.1):
    """Run the worker until idle, stopping it (and failing) if it runs past ``limit_s``."""
    timer = threading.Timer(limit_s, worker._stop.set)
    timer.start()
    try:
        stats = worker.run(exit_when_idle_s=idle_s)
    finally:
        timer.cancel()
    assert not worker._stop.is_set(), f"the run did not finish within {limit_s} s"
    return stats


def outputs_of(publisher, doc_id):
    return [
        decode_output(m.value)
        for t, m in publisher.sent
        if t == "embeddings" and m.value is not None and decode_output(m.value)["id"] == doc_id
    ]


@pytest.mark.parametrize("recreated_during_outage", [False, True])
def test_a_delete_whose_mark_cannot_be_cleared_holds_its_offset_so_a_recreated_copy_is_embedded_again(
    recreated_during_outage,
):
    # Redis down while X is deleted: the old mark X→A survived, the offset was committed anyway, and
    # X re-created as A was then skipped as a dedup hit: the index never got X back. (Re-created
    # during the outage, the copy waits behind the delete's held key, and is looked up after.)
    log = (
        records(("x", "text a"))
        + [Record("in", 0, 1, 1000, b"x", encode_document("x", op="delete"))]
        + records(("x", "text a"), start=2)
    )
    dedup, publisher, at_down = FlakyDedup(), FakeProducer(), []

    def deleted():
        return any(o["op"] == "delete" for o in outputs_of(publisher, "x"))

    steps = [
        (lambda: True, lambda: None, 1),
        (
            lambda: "x" in dedup.marks,
            lambda: setattr(dedup, "down", True),
            3 if recreated_during_outage else 2,
        ),  # X→A marked; Redis goes down
        (
            lambda: deleted() and time.sleep(0.1) is None,
            lambda: setattr(dedup, "down", False),
            3,
        ),  # commits tried meanwhile
    ]
    intake = Steps(log, steps)
    commit = intake.commit
    intake.commit = lambda offsets: (
        at_down.append(dict(offsets)) if dedup.down else None,
        commit(offsets),
    )
    bounded_run(
        Worker(
            Settings(
                kafka=KafkaSettings(commit_interval_ms=5),
                batch=BatchSettings(max_wait_ms=0, max_tokens=64),
            ),
            DummyEncoder(),
            intake,
            publisher,
            dedup,
        )
    )
    assert all(
        c[("in", 0)] <= 1 for c in at_down
    )  # nothing past the delete while its mark was unwritten
    assert [(o["op"], o["source"]["offset"]) for o in outputs_of(publisher, "x")] == [
        ("upsert", 0),
        ("delete", 1),
        ("upsert", 2),
    ]
    assert intake.commits[-1] == {("in", 0): 3} and dedup.marks == {"x": content_hash("text a")}


def test_a_change_of_metadata_alone_is_embedded_again_and_reaches_the_output():
    dedup = FakeDedup()
    first = [
        Record("in", 0, 0, 1000, b"a", encode_document("a", "same text", metadata={"tag": "old"}))
    ]
    retag = [
        Record("in", 0, 1, 1000, b"a", encode_document("a", "same text", metadata={"tag": "new"}))
    ]
    again = [
        Record("in", 0, 2, 1000, b"a", encode_document("a", "same text", metadata={"tag": "new"}))
    ]
    run([first], dedup)
    stats, outputs, _, _ = run([retag], dedup)
    assert [o["metadata"] for _, o in outputs] == [{"tag": "new"}] and stats.dedup_hits == 0
    stats, outputs, _, _ = run([again], dedup)
    assert outputs == [] and stats.dedup_hits == 1  # unchanged: skipped as before


class SpanPublisher(TxnPublisher):
    """Remembers how long each transaction that held outputs stayed open."""

    def __init__(self):
        super().__init__()
        self.first_output, self.spans = None, []

    def produce(self, topic, key, value, headers, on_delivery):
        self.first_output = self.first_output or time.monotonic()
        super().produce(topic, key, value, headers, on_delivery)

    def _closed(self):
        if self.first_output is not None:
            self.spans.append(time.monotonic() - self.first_output)
        self.first_output = None

    def commit_transaction(self, offsets, group_metadata):
        self._closed()
        super().commit_transaction(offsets, group_metadata)

    def abort_transaction(self):
        self._closed()
        super().abort_transaction()


def eos_through_an_outage(log, closed):
    """Exactly-once over ``log``: Redis goes down once offsets 0-1 are committed, and comes back
    0.8 s later; returns the publisher and the highest offset committed."""
    dedup, publisher = FlakyDedup(closed=closed), SpanPublisher()

    def committed():
        return max([o.get(("in", 0), 0) for o, _ in publisher.committed], default=0)

    outage = []
    steps = [
        (lambda: True, lambda: None, 2),
        (
            lambda: committed() == 2,
            lambda: (setattr(dedup, "down", True), outage.append(time.monotonic())),
            4,
        ),
        (lambda: time.monotonic() - outage[0] > 0.8, lambda: setattr(dedup, "down", False), 4),
    ]
    bounded_run(
        Worker(eos_settings(), DummyEncoder(), Steps(log, steps, committed), publisher, dedup)
    )
    assert dedup.refused > 0  # the outage was seen
    return publisher, dedup, committed()


def test_exactly_once_with_redis_down_and_fail_closed_keeps_transactions_short_and_finishes_after():
    # the drain waited for lookups that could not happen: the open transaction (a dead letter in it)
    # outlived the broker's transaction timeout, and the fenced producer ended every worker
    log = (
        records(("a", "alpha"), ("b", "beta"))
        + [Record("in", 0, 2, 1000, b"x", b"\xc1 not msgpack")]
        + records(("c", "gamma"), start=3)
    )
    publisher, _, committed = eos_through_an_outage(log, closed=True)
    assert max(publisher.spans) < 0.4  # no transaction held its outputs through the outage
    assert committed == 4 and publisher.open == []
    assert sorted(off for _, o in publisher.committed for off in o) == [
        0,
        1,
        2,
        3,
    ]  # each output committed once


def test_exactly_once_with_redis_down_and_fail_open_aborts_what_it_cannot_clear_and_redoes_it_after():
    # lookups fail open, but the marks a transaction replaces cannot be cleared: it must not commit
    publisher, dedup, committed = eos_through_an_outage(
        records(("a", "alpha"), ("b", "beta"), ("c", "gamma"), ("d", "delta")), closed=False
    )
    assert publisher.aborts >= 1 and max(publisher.spans) < 0.4
    assert committed == 4 and sorted(off for _, o in publisher.committed for off in o) == [
        0,
        1,
        2,
        3,
    ]
    assert set(dedup.marks) == {"a", "b", "c", "d"}
