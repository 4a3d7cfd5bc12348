"""The waiting room: tokenized documents between intake and the model, indexed by token length so
that choosing the next batch (``batch.policy.choose_batch``) costs a pass over the distinct lengths,
not over every waiting document."""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace

from worker.batch.policy import BatchLimits, Cut, FlushReason, Pick, choose_batch, segments
from worker.consume.decode import Document


@dataclass(frozen=True, slots=True)
class Batch:
    """Documents to encode together, with the policy's choice (flush reason, real and padded tokens)."""

    docs: list[Document]
    cut: Pick | Cut
    arrived: float  # monotonic time the oldest of its documents entered the waiting room


class _Entry:
    __slots__ = ("arrived", "doc", "length", "taken")

    def __init__(self, doc: Document, arrived: float) -> None:
        self.doc = doc
        self.length = doc.n_tokens
        self.arrived = arrived
        self.taken = False


class WaitingRoom:
    """Admitted documents (``worker.order`` keeps per-key order before they get here): one queue
    per token length, in arrival order, and one arrival queue to find the oldest."""

    def __init__(self, limits: BatchLimits) -> None:
        self._limits = limits
        self._buckets: dict[int, deque[_Entry]] = {}
        self._lengths: list[int] = []  # the lengths with a non-empty bucket, ascending
        self._arrivals: deque[_Entry] = (
            deque()
        )  # every waiting entry, oldest first; taken ones drop off lazily
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, docs: Iterable[Document], now: float | None = None) -> None:
        arrived = time.monotonic() if now is None else now
        buckets, arrivals = self._buckets, self._arrivals
        for d in docs:
            e = _Entry(d, arrived)
            bucket = buckets.get(e.length)
            if bucket is None:
                bucket = buckets[e.length] = deque()
                bisect.insort(self._lengths, e.length)
            bucket.append(e)
            arrivals.append(e)
            self._count += 1

    def _oldest(self) -> _Entry | None:
        arrivals = self._arrivals
        while arrivals and arrivals[0].taken:
            arrivals.popleft()
        return arrivals[0] if arrivals else None

    def next_deadline(self) -> float | None:
        """Monotonic time at which the oldest waiting document's deadline expires."""
        oldest = self._oldest()
        return None if oldest is None else oldest.arrived + self._limits.max_wait_s

    def take(self, room: int, now: float | None = None, *, drain: bool = False) -> list[Batch]:
        """Up to ``room`` batches to run now (with ``drain``, everything waiting, as batches)."""
        if not self._count:
            return []
        if drain:
            cuts = segments(
                self._lengths, [len(self._buckets[n]) for n in self._lengths], self._limits
            )
            return [
                self._remove(c if c.full else replace(c, reason=FlushReason.DRAIN)) for c in cuts
            ]
        now = time.monotonic() if now is None else now
        out: list[Batch] = []
        while self._count and len(out) < room:
            oldest = self._oldest()
            assert oldest is not None  # self._count > 0: an entry is waiting
            lengths = self._lengths
            due = now - oldest.arrived >= self._limits.max_wait_s
            pick = choose_batch(
                lengths,
                [len(self._buckets[n]) for n in lengths],
                bisect.bisect_left(lengths, oldest.length),
                self._limits,
                due=due,
            )
            if pick is None:
                break
            out.append(self._remove(pick))
        return out

    def _remove(self, pick: Pick) -> Batch:
        docs: list[Document] = []
        arrived = float("inf")
        emptied = False
        for n, k in pick.take:
            bucket = self._buckets[n]
            for _ in range(k):
                e = bucket.popleft()
                e.taken = True
                docs.append(e.doc)
                arrived = min(arrived, e.arrived)
            if not bucket:
                del self._buckets[n]
                emptied = True
        if emptied:
            self._lengths = [n for n in self._lengths if n in self._buckets]
        self._count -= len(docs)
        return Batch(docs, pick, arrived)

    def drop(self, partitions: set[tuple[str, int]]) -> int:
        """Forget documents of partitions this worker no longer owns; returns how many."""
        kept = [
            e
            for e in self._arrivals
            if not e.taken and (e.doc.source.topic, e.doc.source.partition) not in partitions
        ]
        dropped = self._count - len(kept)
        self._buckets, self._lengths, self._arrivals, self._count = {}, [], deque(), 0
        for e in kept:
            self.add([e.doc], e.arrived)
        return dropped
