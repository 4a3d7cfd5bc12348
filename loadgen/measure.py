"""Match outputs to what was published and measure the fleet end to end.

Every output carries the (partition, offset) of the input it answers, so matching is exact: an
output is counted only if it answers a message this run published, a second answer to the same
message is a duplicate, and a dead letter answers its message too. End-to-end latency is the
output's Kafka timestamp minus the input's (the intended send time, see ``loadgen.rate``).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import msgpack

from worker.config import KafkaSettings
from worker.transport import Message, transport


@dataclass
class Published:
    doc_id: str
    op: str
    sent_ms: int
    tokens: int = 0


@dataclass
class Matcher:
    published: dict[tuple[int, int], Published] = field(default_factory=dict)
    answered: dict[tuple[int, int], int] = field(
        default_factory=dict
    )  # source -> output timestamp (ms)
    latencies_s: list[float] = field(default_factory=list)
    dead_letters: Counter = field(default_factory=Counter)  # reason -> count
    duplicates: int = 0
    tombstones: int = 0
    foreign: int = 0  # outputs answering messages this run did not publish

    def add_published(self, partition: int, offset: int, item: Published) -> None:
        self.published[(partition, offset)] = item

    def answer(
        self, source: tuple[int, int], timestamp_ms: int, dlq_reason: str | None = None
    ) -> bool:
        """Record an output (or, with a reason, a dead letter) answering ``source``; True if it is new."""
        item = self.published.get(source)
        if item is None:
            self.foreign += 1
            return False
        if source in self.answered:
            self.duplicates += 1
            return False
        self.answered[source] = timestamp_ms
        if dlq_reason is None:
            self.latencies_s.append(max(0.0, (timestamp_ms - item.sent_ms) / 1000))
        else:
            self.dead_letters[dlq_reason] += 1
        return True

    def unanswered(self) -> int:
        return len(self.published) - len(self.answered)

    def missing_ids(self) -> list[str]:
        """Ids published in this run with no output and no dead letter for any of their messages.

        An unanswered message whose id *was* answered is normally a dedup skip (the same content
        embedded before); an id with no answer at all is lost."""
        answered_ids = {self.published[s].doc_id for s in self.answered}
        return sorted({p.doc_id for p in self.published.values()} - answered_ids)


@dataclass(frozen=True, slots=True)
class Answer:
    source: tuple[int, int]
    timestamp_ms: int
    arrival_s: float
    dlq_reason: str | None = None


class Collector(threading.Thread):
    """Reads the output and dead-letter topics into a list of ``Answer`` events until stopped.

    Matching happens later, once the publisher knows the offsets it wrote (an output can arrive
    before its input's acknowledgement has been read)."""

    def __init__(
        self, settings: KafkaSettings, output_topic: str, dlq_topic: str, since_ms: int
    ) -> None:
        super().__init__(name="measure-collector", daemon=True)
        self._settings, self._topics, self._since_ms = settings, (output_topic, dlq_topic), since_ms
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._events: list[Answer] = []
        self.tombstones = 0
        self.error: BaseException | None = None

    def stop(self) -> None:
        self._halt.set()

    def take(self) -> list[Answer]:
        with self._lock:
            events, self._events = self._events, []
        return events

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # surfaced by the caller after join()
            self.error = exc

    def _run(self) -> None:
        """From a minute before the run where the broker can say where that is (matching by source
        offset keeps the result exact either way)."""
        reader = transport(self._settings).reader(
            self._settings, list(self._topics), since_ms=self._since_ms
        )
        try:
            while not self._halt.is_set():
                records = reader.read(0.2)
                now = time.time()
                events = [e for e in (self._parse(r, now) for r in records) if e is not None]
                with self._lock:
                    self._events.extend(events)
        finally:
            reader.close()

    def _parse(self, record: Message, now: float) -> Answer | None:
        if record.topic == self._topics[0]:
            if record.value is None:
                self.tombstones += 1
                return None
            source = msgpack.unpackb(record.value, raw=False)["source"]
            return Answer((source["partition"], source["offset"]), record.timestamp, now)
        h = dict(record.headers)
        if "embed-source-partition" not in h:
            return None
        source = (int(h["embed-source-partition"]), int(h["embed-source-offset"]))
        return Answer(source, record.timestamp, now, h.get("embed-dlq-reason", b"unknown").decode())


class LagSampler(threading.Thread):
    """Samples the worker group's lag on the input topic: published end offsets minus committed."""

    def __init__(
        self, settings: KafkaSettings, group: str, topic: str, interval_s: float = 1.0
    ) -> None:
        super().__init__(name="measure-lag", daemon=True)
        self._settings, self._group, self._topic, self._interval_s = (
            settings,
            group,
            topic,
            interval_s,
        )
        self._halt = threading.Event()
        self.ends: dict[int, int] = {}  # partition -> acknowledged end offset, fed by the publisher
        self.starts: dict[int, int] = {}  # partition -> first offset this run wrote
        self.samples: list[tuple[float, int]] = []

    def acknowledged(self, partition: int, offset: int) -> None:
        self.starts.setdefault(partition, offset)
        if offset + 1 > self.ends.get(partition, 0):
            self.ends[partition] = offset + 1

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        consumer = transport(self._settings).consumer(self._settings, group_id=self._group)
        try:
            while not self._halt.wait(self._interval_s):
                ends = dict(self.ends)
                committed = consumer.committed({(self._topic, p) for p in ends}) if ends else {}
                lag = 0
                for p, end in ends.items():
                    lag += max(
                        0, end - max(committed.get((self._topic, p)) or 0, self.starts.get(p, 0))
                    )
                self.samples.append((time.time(), lag))
        except Exception:
            pass  # lag sampling is best effort; the report says how many samples it has
        finally:
            consumer.close()
