"""``embed-worker dlq replay``: re-publish chosen dead letters to the input topic, once each.

A replayed letter goes out with its original key and value, to the input partition it came from,
with an ``embed-replay-of`` header naming the letter, so the worker reads it as it read the
original and in the same order as the document's other versions. The order of one replay:

1. Read the dead-letter topic to its end, and keep the letters the selection chooses.
2. Read the progress topic (``<dlq topic>.replayed`` unless told otherwise, compacted, created
   when missing): one record per letter already replayed, keyed by the letter's place. Those are
   skipped, so running the same command again publishes nothing twice.
3. Read the input topic and skip what must not go back: a letter whose value was too large to
   keep; one from another source topic than the target; one **superseded** by a later message
   with the same key in its input partition (a newer version, a delete, a later dead letter of it,
   or its own earlier replay): replaying the old version would put it back over the newer one in
   the index; and one that cannot be checked (**unverifiable**): no key, no source recorded, or its
   source message is gone from the input (retention or compaction may have taken a newer version
   or a delete with it). ``--no-newer-check`` skips this read and both checks.
4. Publish the rest in slices; once a slice is delivered (or has failed), record the delivered
   letters in the progress topic. A crash between the two leaves a slice unrecorded; the next run
   finds those replays in the input and skips the letters as superseded (unless the check is off).

``plan`` is the pure part (letters, what is done, what the input holds → what to send).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from worker.config import KafkaSettings
from worker.deadletter.letters import DeadLetter, Selection, parse
from worker.deadline import Deadline
from worker.errors import PublishError, TransportError
from worker.transport import Message, Producer, transport

log = logging.getLogger("embed-worker.dlq")

REPLAY_OF = "embed-replay-of"  # header of a replayed message: the letter's topic/partition/offset
SLICE = 500  # letters published, then recorded, at a time
Key = tuple[int, bytes]  # (input partition, key)


def progress_topic_for(dlq_topic: str) -> str:
    return f"{dlq_topic}.replayed"


@dataclass
class Input:
    """What the input topic holds for the chosen letters' documents."""

    latest: dict[Key, int] = field(default_factory=dict)  # highest offset of each (partition, key)
    seen: set[tuple[int, int]] = field(default_factory=set)  # the letters' sources still there


@dataclass
class Plan:
    send: list[DeadLetter] = field(default_factory=list)
    done: int = 0  # replayed by an earlier run
    superseded: int = 0  # a later message of the document is in the input
    unverifiable: int = 0  # no key, no source, or the source is gone from the input
    not_kept: int = 0  # the original value was too large to keep
    other_topic: int = 0  # dead-lettered from another input topic than the target

    def counts(self) -> dict[str, int]:
        return {
            "to_send": len(self.send),
            "already_replayed": self.done,
            "superseded": self.superseded,
            "unverifiable": self.unverifiable,
            "value_not_kept": self.not_kept,
            "other_source_topic": self.other_topic,
        }


def plan(letters: list[DeadLetter], done: set[str], held: Input | None, target: str) -> Plan:
    """What a replay sends of the chosen ``letters``, in dead-letter order. ``held`` is what the
    input topic holds for their documents (None: not read, ``--no-newer-check``); ``done`` the
    places replayed."""
    out = Plan()
    for letter in letters:
        if letter.place in done:
            out.done += 1
        elif not letter.value_kept:
            out.not_kept += 1
        elif letter.source_topic and letter.source_topic != target:
            out.other_topic += 1
        elif held is None:
            out.send.append(letter)
        elif (
            letter.key is None
            or letter.source_offset < 0
            or (letter.source_partition, letter.source_offset) not in held.seen
        ):
            out.unverifiable += 1
        elif held.latest.get((letter.source_partition, letter.key), -1) > letter.source_offset:
            out.superseded += 1
        else:
            out.send.append(letter)
    return out


def read_all(
    settings: KafkaSettings, topic: str, *, since_ms: int | None = None, timeout_s: float = 30.0
) -> Iterator[Message]:
    """Every record of ``topic`` up to the end each partition reported (from ``since_ms``), as a
    reader of committed data when the worker runs exactly-once (no aborted letters or inputs).
    ``TransportError`` when a partition neither yields records nor reaches its end for
    ``timeout_s`` (an offline leader, a refused fetch): a silent hang would be worse."""
    reader = transport(settings).reader(
        settings,
        [topic],
        since_ms=since_ms,
        timeout_s=timeout_s,
        read_committed=settings.exactly_once,
    )
    try:
        stalled = Deadline(timeout_s)
        while True:
            got = reader.read(0.5)
            yield from got
            if got:
                stalled = Deadline(timeout_s)
            elif reader.at_end():
                return
            elif stalled.expired():
                raise TransportError(
                    f"reading {topic}: no record and no end of every partition within {timeout_s:.0f} s "
                    "(a partition without a leader, or a fetch the broker refuses: check the ACLs)"
                )
    finally:
        reader.close()


def read_letters(
    settings: KafkaSettings, selection: Selection, timeout_s: float
) -> list[DeadLetter]:
    """The letters of the dead-letter topic the selection chooses (read from ``since``)."""
    letters = (
        parse(m)
        for m in read_all(
            settings, settings.dlq_topic, since_ms=selection.since_ms, timeout_s=timeout_s
        )
    )
    return [x for x in letters if selection.matches(x)]


def read_replayed(settings: KafkaSettings, progress_topic: str, timeout_s: float) -> set[str]:
    """The places of the letters a replay has recorded (none when the topic does not exist)."""
    from worker.transport.kafka_python import existing_topics

    if progress_topic not in existing_topics(settings):
        return set()
    return {
        m.key.decode()
        for m in read_all(settings, progress_topic, timeout_s=timeout_s)
        if m.key is not None and m.value is not None
    }


def read_input(
    settings: KafkaSettings, topic: str, letters: list[DeadLetter], timeout_s: float
) -> Input:
    """The input topic, read whole, for the letters' documents and sources."""
    keys = {(x.source_partition, x.key) for x in letters if x.key is not None}
    sources = {(x.source_partition, x.source_offset) for x in letters}
    held = Input()
    if not letters:
        return held
    for m in read_all(settings, topic, timeout_s=timeout_s):
        if (m.partition, m.offset) in sources:
            held.seen.add((m.partition, m.offset))
        if m.key is not None and (m.partition, m.key) in keys:
            k = (m.partition, m.key)
            held.latest[k] = max(held.latest.get(k, -1), m.offset)
    return held


class Replayer:
    """One replay run against one cluster (``settings``): ``prepare`` reads and plans, ``send``
    publishes and records."""

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        target: str | None = None,
        progress_topic: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self._s = settings
        self.target = target or settings.input_topic
        self.progress_topic = progress_topic or progress_topic_for(settings.dlq_topic)
        self._timeout_s = timeout_s
        # how long deliveries are waited for: a message not acknowledged yet may still land
        self._delivery_s = max(timeout_s, 2 * settings.request_timeout_ms / 1000)

    def prepare(
        self, selection: Selection, *, check_newer: bool = True, dry_run: bool = False
    ) -> Plan:
        """Read and plan. A dry run creates nothing: a missing progress topic reads as empty."""
        chosen = read_letters(self._s, selection, self._timeout_s)
        if not dry_run:
            self._ensure_progress_topic()
        done = read_replayed(self._s, self.progress_topic, self._timeout_s)
        open_letters = [x for x in chosen if x.place not in done]
        held = (
            read_input(self._s, self.target, open_letters, self._timeout_s) if check_newer else None
        )
        return plan(chosen, done, held, self.target)

    def _ensure_progress_topic(self) -> None:
        from worker.transport.kafka_python import create_topics

        create_topics(
            self._s,
            {self.progress_topic: 1},
            replication=None,
            config={"cleanup.policy": "compact"},
        )

    def send(self, letters: list[DeadLetter]) -> int:
        """Publish ``letters`` to the target, recording each delivered one; returns how many were
        replayed. ``PublishError`` says how many were not (those stay unrecorded)."""
        producer = self._producer()
        replayed = 0
        try:
            for start in range(0, len(letters), SLICE):
                part = letters[start : start + SLICE]
                landed, problem = self._publish(producer, part)
                self._record(producer, part, landed)  # what landed, whatever failed
                replayed += len(landed)
                if problem is not None:
                    raise PublishError(
                        f"{len(part) - len(landed)} of {len(part)} letters of this slice were not "
                        f"delivered to {self.target} ({problem}); {replayed} replayed and recorded in "
                        f"all. Run the same command again for the rest."
                    )
                log.info("replayed %d of %d letters", replayed, len(letters))
        finally:
            producer.close()
        return replayed

    def _producer(self) -> Producer:
        return transport(self._s).producer(self._s, client_suffix="-dlq-replay")

    def _publish(self, producer: Producer, letters: list[DeadLetter]) -> tuple[_Landed, object]:
        """Send, then wait for every delivery callback (a flush that times out is waited on
        again, up to the deadline: a message not yet acknowledged may still land). Returns what
        landed and the first problem, if any."""
        landed = _Landed()
        problem: object = None
        try:
            for x in letters:
                same_topic = x.source_topic in ("", self.target) and x.source_partition >= 0
                producer.send(
                    self.target,
                    x.key,
                    x.value,
                    landed.callback(x.place),
                    headers=[(REPLAY_OF, x.place.encode())],
                    partition=x.source_partition if same_topic else None,
                )
                landed.sent += 1
        except TransportError as exc:  # the rest of the slice is not sent
            problem = exc
        deadline = Deadline(self._delivery_s)
        while landed.answered < landed.sent and not deadline.expired():
            try:
                producer.flush(min(5.0, max(0.1, deadline.remaining())))
            except TransportError:
                continue
        if landed.answered < landed.sent:
            problem = problem or f"{landed.sent - landed.answered} deliveries unanswered"
        return landed, problem or landed.error

    def _record(self, producer: Producer, letters: list[DeadLetter], landed: _Landed) -> None:
        now = int(time.time() * 1000)
        recorded = _Landed()
        try:
            self._send_records(producer, letters, landed, recorded, now)
        except TransportError as exc:
            recorded.error = exc
        try:
            producer.flush(self._delivery_s)
        except TransportError as exc:
            recorded.error = recorded.error or exc
        if recorded.error is not None or recorded.answered < recorded.sent:
            raise PublishError(
                f"{len(landed)} replayed letters could not all be recorded in {self.progress_topic} "
                f"({recorded.error or 'no answer'}): a second run finds their replays in the input and "
                "skips them as superseded, unless --no-newer-check is given"
            )

    def _send_records(
        self,
        producer: Producer,
        letters: list[DeadLetter],
        landed: _Landed,
        recorded: _Landed,
        now: int,
    ) -> None:
        for x in letters:
            if x.place in landed:
                record = {
                    "to": f"{self.target}/{landed[x.place]}",
                    "at": now,
                    "reason": x.reason,
                    "id": x.document_id,
                }
                producer.send(
                    self.progress_topic,
                    x.place.encode(),
                    json.dumps(record).encode(),
                    recorded.callback(x.place),
                )
                recorded.sent += 1


class _Landed(dict[str, str]):
    """place → ``partition/offset`` where its replay landed; ``error``: the first failure."""

    def __init__(self) -> None:
        super().__init__()
        self.error: object = None
        self.sent = 0
        self.answered = 0

    def callback(self, place: str):
        def on_sent(err, partition: int, offset: int, _ts: int) -> None:
            self.answered += 1
            if err is not None:
                if self.error is None:
                    self.error = err
            else:
                self[place] = f"{partition}/{offset}"

        return on_sent
