"""The waiting room: documents between intake and the encoder, cut into batches by the policy.

Per-key order is kept: while an earlier message with the same (partition, id) waits, later ones
are held back, so the outputs of one document come out in the order its inputs went in. The chunk
rows of one message (same key, same offset) are not held back by each other.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable

from worker.batch.policy import BatchLimits, Cut, cut_batches
from worker.consume.decode import Document


@dataclass(frozen=True, slots=True)
class Batch:
    """Documents to encode together, with the policy's cut (flush reason, real and padded tokens)."""

    docs: list[Document]
    cut: Cut
    arrived: float  # monotonic time the oldest of its documents entered the waiting room


KeyOf = tuple[int, str]  # (partition, document id)


class InFlight:
    """Rows cut into batches and not yet handed to the producer, by key: the offset of the one
    message per key that may be in flight, and how many of its rows are."""

    def __init__(self) -> None:
        self._rows: dict[KeyOf, list[int]] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def offset(self, key: KeyOf) -> int | None:
        entry = self._rows.get(key)
        return entry[0] if entry else None

    def add(self, doc: Document) -> None:
        self._rows.setdefault((doc.source.partition, doc.id), [doc.source.offset, 0])[1] += 1

    def release(self, doc: Document) -> None:
        key = (doc.source.partition, doc.id)
        entry = self._rows.get(key)
        if entry is not None:
            entry[1] -= 1
            if entry[1] <= 0:
                del self._rows[key]

    def clear(self) -> None:
        self._rows.clear()


class WaitingRoom:
    def __init__(self, limits: BatchLimits) -> None:
        self._limits = limits
        self._docs: list[tuple[float, Document]] = []

    def __len__(self) -> int:
        return len(self._docs)

    def add(self, docs: Iterable[Document], now: float | None = None) -> None:
        arrived = time.monotonic() if now is None else now
        self._docs.extend((arrived, d) for d in docs)

    def next_deadline(self) -> float | None:
        """Monotonic time at which the oldest waiting document's deadline expires."""
        if not self._docs:
            return None
        return self._docs[0][0] + self._limits.max_wait_s

    def take(self, now: float | None = None, *, drain: bool = False, busy: InFlight | None = None) -> list[Batch]:
        """Remove and return the batches the policy says to run now.

        Documents whose (partition, id) has another message's rows in ``busy`` (still in the
        pipeline) are held back, like those behind an earlier message waiting here."""
        if not self._docs:
            return []
        now = time.monotonic() if now is None else now
        eligible, held = self._split_by_key(busy)
        if not eligible:
            return []
        docs = [self._docs[i][1] for i in eligible]
        arrivals = [self._docs[i][0] for i in eligible]
        oldest_wait = now - arrivals[0]
        cuts = cut_batches([d.n_tokens for d in docs], oldest_wait, self._limits, drain=drain)
        if not cuts:
            return []
        taken = {eligible[i] for cut in cuts for i in cut.indices}
        self._docs = [entry for i, entry in enumerate(self._docs) if i not in taken]
        batches = [Batch([docs[i] for i in cut.indices], cut, min(arrivals[i] for i in cut.indices)) for cut in cuts]
        if drain and held:
            batches.extend(self.take(now, drain=True, busy=busy))
        return batches

    def drop(self, partitions: set[tuple[str, int]]) -> int:
        """Forget documents of partitions this worker no longer owns; returns how many."""
        before = len(self._docs)
        self._docs = [(t, d) for t, d in self._docs if (d.source.topic, d.source.partition) not in partitions]
        return before - len(self._docs)

    def _split_by_key(self, busy: InFlight | None) -> tuple[list[int], list[int]]:
        first: dict[KeyOf, int] = {}  # the offset of each key's first waiting message
        eligible, held = [], []
        for i, (_, doc) in enumerate(self._docs):
            k, offset = (doc.source.partition, doc.id), doc.source.offset
            running = busy.offset(k) if busy is not None else None
            blocked = first.setdefault(k, offset) != offset or running not in (None, offset)
            (held if blocked else eligible).append(i)
        return eligible, held
