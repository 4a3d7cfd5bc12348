from __future__ import annotations

import pytest

from tests.unit.deadletter.test_letters import message
from worker.config import KafkaSettings
from worker.deadletter.letters import Selection, parse
from worker.deadletter.replay import REPLAY_OF, Input, Replayer, plan, progress_topic_for
from worker.errors import PublishError, TransportError


def letters():
    return [
        parse(message(0, key=b"a", source_offset=b"10")),
        parse(message(1, key=b"b", source_offset=b"11")),
        parse(message(2, key=b"c", source_offset=b"12", extra=[("embed-dlq-value-bytes", b"9")])),
        parse(message(3, key=b"d", source_offset=b"13", reason=b"undecodable")),
        parse(message(4, key=None, source_offset=b"14")),
        parse(message(5, key=b"e", source_offset=b"15")),
        parse(message(6, key=b"f", source_offset=b"16")),
    ]


def chosen(selection):
    return [x for x in letters() if selection.matches(x)]


def held(*, gone=()):
    """The input as it holds the letters' sources (partition 2), less ``gone``; a has a later
    version at 40; e's latest is itself."""
    seen = {(2, o) for o in range(10, 17) if o not in gone}
    return Input(latest={(2, b"a"): 40, (2, b"e"): 15, (2, b"f"): 16}, seen=seen)


def test_plan_sends_what_is_chosen_and_not_done_kept_superseded_or_unverifiable():
    done = {"documents.dlq/0/1"}  # b: replayed before
    p = plan(
        chosen(Selection(reasons=frozenset({"encode_failed"}))),
        done,
        held(gone={16}),
        "documents",
    )
    assert [x.document_id for x in p.send] == ["e"]
    assert p.counts() == {
        "to_send": 1,
        "already_replayed": 1,
        "superseded": 1,  # a
        "unverifiable": 2,  # the letter without a key; f, whose source is gone from the input
        "value_not_kept": 1,
        "other_source_topic": 0,
    }


def test_without_the_newer_check_everything_open_is_sent():
    p = plan(chosen(Selection(reasons=frozenset({"encode_failed"}))), set(), None, "documents")
    assert [x.offset for x in p.send] == [0, 1, 4, 5, 6]


def test_plan_keeps_letters_of_another_input_topic_out():
    p = plan(chosen(Selection()), set(), held(), "other-topic")
    assert p.send == [] and p.other_topic == 6 and p.not_kept == 1


def test_progress_topic_name():
    assert progress_topic_for("documents.dlq") == "documents.dlq.replayed"


class FakeProducer:
    """Answers each send through its callback at the next flush: ``fail`` names keys whose
    delivery fails, ``refuse_after`` sends after which send() raises, ``silent`` flushes that
    answer nothing (a slow broker)."""

    def __init__(self, *, fail=(), refuse_after=None, silent=0, fail_records=False):
        self.sent, self.pending, self._fail = [], [], set(fail)
        self._refuse_after, self._silent, self._fail_records = refuse_after, silent, fail_records

    def send(self, topic, key, value, on_sent, timestamp_ms=None, headers=None, partition=None):
        if (
            self._refuse_after is not None
            and topic == "documents"
            and len(self.sent) >= self._refuse_after
        ):
            raise TransportError("the producer's queue stayed full")
        self.sent.append((topic, key, value, headers, partition))
        self.pending.append((topic, key, on_sent, partition))

    def flush(self, timeout_s):
        if self._silent:
            self._silent -= 1
            raise TransportError("flush timed out")
        for n, (topic, key, on_sent, partition) in enumerate(self.pending):
            bad = key in self._fail or (self._fail_records and topic.endswith(".replayed"))
            on_sent(TransportError("refused") if bad else None, partition or 0, 100 + n, 0)
        self.pending = []

    def close(self, timeout_s=10.0):
        pass


def replayer(producer, monkeypatch) -> Replayer:
    r = Replayer(KafkaSettings(input_topic="documents"), timeout_s=1.0)
    monkeypatch.setattr(r, "_producer", lambda: producer)
    return r


def open_letters():
    return [
        parse(message(i, key=f"k{i}".encode(), source_offset=str(10 + i).encode()))
        for i in range(4)
    ]


def records(producer):
    return {key.decode() for topic, key, *_ in producer.sent if topic == "documents.dlq.replayed"}


def test_send_publishes_to_the_source_partition_with_the_header_and_records_each(monkeypatch):
    p = FakeProducer()
    assert replayer(p, monkeypatch).send(open_letters()) == 4
    out = [s for s in p.sent if s[0] == "documents"]
    assert [(key, partition) for _, key, _, _, partition in out] == [
        (b"k0", 2),
        (b"k1", 2),
        (b"k2", 2),
        (b"k3", 2),
    ]
    assert out[0][3] == [(REPLAY_OF, b"documents.dlq/0/0")] and out[0][2] == b"value"
    assert records(p) == {f"documents.dlq/0/{i}" for i in range(4)}


def test_a_failed_delivery_is_not_recorded_and_the_rest_are(monkeypatch):
    p = FakeProducer(fail={b"k2"})
    with pytest.raises(PublishError, match="1 of 4 letters"):
        replayer(p, monkeypatch).send(open_letters())
    assert records(p) == {"documents.dlq/0/0", "documents.dlq/0/1", "documents.dlq/0/3"}


def test_a_refused_send_records_what_landed_before_it(monkeypatch):
    p = FakeProducer(refuse_after=2)
    with pytest.raises(PublishError, match="2 of 4 letters"):
        replayer(p, monkeypatch).send(open_letters())
    assert records(p) == {"documents.dlq/0/0", "documents.dlq/0/1"}


def test_a_flush_that_times_out_is_waited_on_again(monkeypatch):
    p = FakeProducer(silent=2)
    assert replayer(p, monkeypatch).send(open_letters()) == 4
    assert len(records(p)) == 4


def test_records_that_fail_are_reported(monkeypatch):
    p = FakeProducer(fail_records=True)
    with pytest.raises(PublishError, match="could not all be recorded"):
        replayer(p, monkeypatch).send(open_letters())
