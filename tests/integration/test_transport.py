"""The transport's tool-facing half against the real broker, with each client: ``Producer.send``
reports where a message landed, ``Reader`` reads whole topics back and knows their end, and a
consumer reads its group's commits without joining the group."""

from __future__ import annotations

import threading
import time

import pytest

from loadgen.readback import committed_offsets, read_topic
from worker.config import KafkaSettings
from worker.stack.devstack import create_topics
from worker.transport import transport

pytestmark = pytest.mark.integration

CLIENTS = ["confluent", "kafka-python"]


def _send(
    kafka: KafkaSettings, topic: str, messages: list[tuple[bytes, bytes | None]], **kw
) -> list[tuple]:
    """Send and flush; returns each message's (error, partition, offset, timestamp) in send order."""
    producer = transport(kafka).producer(kafka)
    results: dict[int, tuple] = {}
    try:
        producer.warm(topic)
        for i, (key, value) in enumerate(messages):
            producer.send(
                topic,
                key,
                value,
                lambda err, p, o, t, i=i: results.__setitem__(i, (err, p, o, t)),
                **kw,
            )
            producer.poll()
        producer.flush(30)
    finally:
        producer.close()
    return [results[i] for i in range(len(messages))]


@pytest.mark.parametrize("client", CLIENTS)
def test_send_reports_where_each_message_landed_and_the_reader_finds_it_there(lane, client):
    kafka = KafkaSettings(bootstrap_servers=lane.stack.kafka, client=client)
    messages = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(40)] + [(b"gone", None)]
    results = _send(kafka, lane.input, messages, timestamp_ms=1_700_000_000_000)
    assert all(err is None for err, *_ in results)
    assert len({(p, o) for _, p, o, _ in results}) == len(messages)  # distinct places
    assert {t for *_, t in results} == {1_700_000_000_000}

    read = read_topic(kafka, lane.input, timeout_s=30)
    by_place = {(m.partition, m.offset): m for m in read}
    assert len(read) == len(messages)
    for (key, value), (_, p, o, _) in zip(messages, results):
        m = by_place[(p, o)]
        assert (m.topic, m.key, m.value, m.timestamp, m.headers) == (
            lane.input,
            key,
            value,
            1_700_000_000_000,
            [],
        )
    # one key, one partition, in send order
    ones = [(p, o) for (key, _), (_, p, o, _) in zip(messages, results) if key == b"k7"]
    assert len(ones) == 1


@pytest.mark.parametrize("client", CLIENTS)
def test_a_reader_stops_at_the_end_and_reads_headers(lane, client):
    kafka = KafkaSettings(bootstrap_servers=lane.stack.kafka, client=client)
    producer = transport(kafka).producer(kafka)
    try:
        for i in range(5):
            producer.produce(lane.dlq, b"k", b"x", [("reason", f"r{i}".encode())], lambda *_: None)
        producer.flush(30)
    finally:
        producer.close()
    reader = transport(kafka).reader(
        kafka, [lane.dlq, lane.output], timeout_s=30
    )  # the output topic is empty
    try:
        got, deadline = [], time.monotonic() + 30
        while not reader.at_end() and time.monotonic() < deadline:
            got += reader.read(0.5)
        assert reader.at_end()
        assert [dict(m.headers)["reason"] for m in got] == [b"r0", b"r1", b"r2", b"r3", b"r4"]
    finally:
        reader.close()


@pytest.mark.parametrize("client", CLIENTS)
def test_a_reader_of_a_topic_that_never_appears_returns_nothing_when_its_wait_ends(stack, client):
    kafka = KafkaSettings(bootstrap_servers=stack.kafka, client=client)
    started = time.monotonic()
    assert read_topic(kafka, f"never-created-{time.time_ns()}", timeout_s=3) == []
    assert time.monotonic() - started < 20


@pytest.mark.parametrize("client", CLIENTS)
def test_committed_offsets_are_read_without_joining_the_group(lane, client):
    kafka = KafkaSettings(bootstrap_servers=lane.stack.kafka, client=client)
    create_topics(lane.stack.kafka, {lane.input: 3})
    assert committed_offsets(kafka, lane.group, lane.input, [0, 1, 2]) == {
        0: None,
        1: None,
        2: None,
    }
    writer = transport(kafka).consumer(kafka, group_id=lane.group)
    try:
        writer.commit({(lane.input, 1): 17})  # a simple commit: no member, no generation
    finally:
        writer.close()
    assert committed_offsets(kafka, lane.group, lane.input, [0, 1, 2]) == {0: None, 1: 17, 2: None}


class _Changes:
    def __init__(self) -> None:
        self.events: list[tuple[str, set]] = []

    def on_assigned(self, tps) -> None:
        self.events.append(("assigned", set(tps)))

    def on_revoked(self, tps) -> None:
        self.events.append(("revoked", set(tps)))

    def on_lost(self, tps) -> None:
        self.events.append(("lost", set(tps)))


@pytest.mark.parametrize("client", CLIENTS)
def test_a_member_is_not_settled_between_a_revocation_and_the_assignment_after_it(lane, client):
    """An eager rebalance after another member leaves: the partitions are revoked, then (seconds
    later on the local broker) all of them come back. In between the member must not look idle
    (owning partitions and settled), or a worker exiting when idle leaves with its work undone."""
    kafka = KafkaSettings(
        bootstrap_servers=lane.stack.kafka,
        client=client,
        group_id=lane.group,
        input_topic=lane.input,
        assignment_strategy="range",
        max_poll_interval_ms=10_000,
        session_timeout_ms=6_000,
        heartbeat_interval_ms=1_000,
    )
    everything = {(lane.input, p) for p in range(3)}
    leaving, staying = (transport(kafka).consumer(kafka) for _ in range(2))
    listener = _Changes()
    staying.subscribe(listener)
    leaving.subscribe(_Changes())
    stop = threading.Event()

    def keep_polling() -> None:  # each member on a thread of its own, as each worker process is
        while not stop.is_set():
            leaving.consume(100, 0.1)

    other = threading.Thread(target=keep_polling, daemon=True)
    other.start()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not (
            staying.assignment() and staying.settled() and len(staying.assignment()) < 3
        ):
            staying.consume(100, 0.1)
        assert 0 < len(staying.assignment()) < 3, "the two members never shared the partitions"
        stop.set()
        other.join(10)
        leaving.close()  # it leaves the group: an eager rebalance follows
        seen = len(listener.events)
        between = (
            0  # consume calls that returned after the revocation and before the new assignment
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
            staying.assignment() == everything and staying.settled()
        ):
            staying.consume(100, 0.1)
            since = [kind for kind, _ in listener.events[seen:]]
            if "revoked" in since and "assigned" not in since[since.index("revoked") :]:
                between += 1
                assert not (staying.assignment() and staying.settled()), (
                    "idle-looking in the middle of a rebalance"
                )
        assert staying.assignment() == everything
        assert between > 0, (
            "the revocation and the assignment came in one call: nothing in between was checked"
        )
    finally:
        stop.set()
        other.join(10)
        for member in (leaving, staying):
            member.close()
