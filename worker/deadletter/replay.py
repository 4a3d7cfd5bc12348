"""``embed-worker dlq replay``: re-publish chosen dead letters to the input topic, once each.

A replayed letter goes out with its original key and value (and an ``embed-replay-of`` header
naming the letter), so the worker reads it as it read the original. The order of one replay:

1. Read the dead-letter topic to its end, and keep the letters the selection chooses.
2. Read the progress topic (``<dlq topic>.replayed`` unless told otherwise, compacted, created
   when missing): one record per letter already replayed, keyed by the letter's place. Those are
   skipped, so running the same command again publishes nothing twice.
3. Skip what must not be replayed: a letter whose value was too large to keep; one from another
   source topic than the target; and one **superseded** by a later message with the same key
   in the input partition it came from (a newer version, a delete, or a later dead letter of it):
   replaying the old version would put it back over the newer one in the index. (Messages
   without a key are not one document: they are never superseded.)
4. Publish the rest in slices; after each slice is acknowledged, record its letters in the
   progress topic. A crash between the two can publish a slice twice, never lose one: the
   worker's answer to a repeated document is the same vector, and dedup skips it.

``plan`` is the pure part (letters, what is done, what superseded them → what to send).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from worker.config import KafkaSettings
from worker.deadletter.letters import DeadLetter, Selection, parse
from worker.deadline import Deadline
from worker.errors import PublishError
from worker.transport import Message, transport

log = logging.getLogger("embed-worker.dlq")

REPLAY_OF = "embed-replay-of"  # header of a replayed message: the letter's topic/partition/offset
SLICE = 500  # letters published, then recorded, at a time


def progress_topic_for(dlq_topic: str) -> str:
    return f"{dlq_topic}.replayed"


@dataclass
class Plan:
    send: list[DeadLetter] = field(default_factory=list)
    done: int = 0  # replayed by an earlier run
    superseded: int = 0  # a later message of the document is in the input
    not_kept: int = 0  # the original value was too large to keep
    other_topic: int = 0  # dead-lettered from another input topic than the target

    def counts(self) -> dict[str, int]:
        return {
            "to_send": len(self.send),
            "already_replayed": self.done,
            "superseded": self.superseded,
            "value_not_kept": self.not_kept,
            "other_source_topic": self.other_topic,
        }


def plan(
    letters: Iterable[DeadLetter],
    selection: Selection,
    done: set[str],
    latest: dict[tuple[int, bytes | None], int],
    target: str,
) -> Plan:
    """What a replay sends, in dead-letter order. ``latest`` is the highest input offset of each
    (source partition, key) among the selected letters' documents; ``done`` the places already
    replayed."""
    out = Plan()
    for letter in letters:
        if not selection.matches(letter):
            continue
        if letter.place in done:
            out.done += 1
        elif not letter.value_kept:
            out.not_kept += 1
        elif letter.source_topic and letter.source_topic != target:
            out.other_topic += 1
        elif (
            letter.key is not None
            and latest.get((letter.source_partition, letter.key), -1) > letter.source_offset
        ):
            out.superseded += 1
        else:
            out.send.append(letter)
    return out


def read_all(
    settings: KafkaSettings, topic: str, *, since_ms: int | None = None, timeout_s: float = 30.0
) -> Iterable[Message]:
    """Every record of ``topic`` up to the end each partition reported (from ``since_ms``)."""
    reader = transport(settings).reader(settings, [topic], since_ms=since_ms, timeout_s=timeout_s)
    try:
        while True:
            got = reader.read(0.5)
            yield from got
            if not got and reader.at_end():
                return
    finally:
        reader.close()


def read_letters(
    settings: KafkaSettings, selection: Selection, timeout_s: float
) -> list[DeadLetter]:
    return [
        parse(m)
        for m in read_all(
            settings, settings.dlq_topic, since_ms=selection.since_ms, timeout_s=timeout_s
        )
    ]


def read_replayed(settings: KafkaSettings, progress_topic: str, timeout_s: float) -> set[str]:
    """The places of the letters a replay has recorded (none when the topic does not exist)."""
    return {
        m.key.decode()
        for m in read_all(settings, progress_topic, timeout_s=timeout_s)
        if m.key is not None and m.value is not None
    }


def latest_offsets(
    settings: KafkaSettings, topic: str, wanted: set[tuple[int, bytes | None]], timeout_s: float
) -> dict[tuple[int, bytes | None], int]:
    """The highest offset of each wanted (partition, key) in the input topic (read whole)."""
    latest: dict[tuple[int, bytes | None], int] = {}
    if not wanted:
        return latest
    for m in read_all(settings, topic, timeout_s=timeout_s):
        k = (m.partition, m.key)
        if k in wanted and m.offset > latest.get(k, -1):
            latest[k] = m.offset
    return latest


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

    def prepare(self, selection: Selection, *, check_newer: bool = True) -> Plan:
        letters = read_letters(self._s, selection, self._timeout_s)
        chosen = [x for x in letters if selection.matches(x)]
        self._ensure_progress_topic()
        done = read_replayed(self._s, self.progress_topic, self._timeout_s)
        latest: dict[tuple[int, bytes | None], int] = {}
        if check_newer:
            wanted: set[tuple[int, bytes | None]] = {
                (x.source_partition, x.key)
                for x in chosen
                if x.key is not None  # messages without a key are not one document
                and x.place not in done
                and x.source_topic in ("", self.target)
            }
            latest = latest_offsets(self._s, self.target, wanted, self._timeout_s)
        return plan(chosen, selection, done, latest, self.target)

    def _ensure_progress_topic(self) -> None:
        from worker.transport.kafka_python import create_topics

        create_topics(
            self._s,
            {self.progress_topic: 1},
            replication=None,
            config={"cleanup.policy": "compact"},
        )

    def send(self, letters: list[DeadLetter]) -> int:
        """Publish ``letters`` to the target and record each once acknowledged; returns how many
        were replayed. ``PublishError`` names how many were not (those stay unrecorded)."""
        producer = transport(self._s).producer(self._s, client_suffix="-dlq-replay")
        replayed = 0
        try:
            for start in range(0, len(letters), SLICE):
                part = letters[start : start + SLICE]
                landed = self._publish(producer, part)
                self._record(producer, part, landed)
                replayed += len(landed)
                if len(landed) < len(part):
                    raise PublishError(
                        f"{len(part) - len(landed)} of {len(part)} letters were not acknowledged by "
                        f"{self.target} (the first error: {landed.error}); {replayed} replayed and recorded. "
                        "Run the same command again to replay the rest."
                    )
                log.info("replayed %d of %d letters", replayed, len(letters))
        finally:
            producer.close()
        return replayed

    def _publish(self, producer, letters: list[DeadLetter]) -> _Landed:
        landed = _Landed()
        for x in letters:
            producer.send(
                self.target,
                x.key,
                x.value,
                landed.callback(x.place),
                headers=[(REPLAY_OF, x.place.encode())],
            )
        producer.flush(Deadline(self._timeout_s).remaining())
        return landed

    def _record(self, producer, letters: list[DeadLetter], landed: _Landed) -> None:
        now = int(time.time() * 1000)
        failed = _Landed()
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
                    failed.callback(x.place),
                )
        producer.flush(self._timeout_s)
        if failed.error is not None:
            raise PublishError(
                f"replayed letters could not be recorded in {self.progress_topic} ({failed.error}): "
                "running the command again would publish them a second time"
            )


class _Landed(dict[str, str]):
    """place → ``topic/partition/offset`` where its replay landed; ``error``: the first failure."""

    error: object = None

    def callback(self, place: str):
        def on_sent(err, partition: int, offset: int, _ts: int) -> None:
            if err is not None:
                if self.error is None:
                    self.error = err
            else:
                self[place] = f"{partition}/{offset}"

        return on_sent
