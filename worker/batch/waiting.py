"""The waiting room: tokenized documents between intake and the encoder, cut into batches by the
policy (``batch.policy``)."""

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


class WaitingRoom:
    """Admitted documents (``worker.order`` keeps per-key order before they get here), in arrival
    order, with running counts so that asking "is a batch due?" costs the same at 10 as at 4,000."""

    def __init__(self, limits: BatchLimits) -> None:
        self._limits = limits
        self._docs: list[Document] = []
        self._arrived: list[float] = []
        self._tokens = 0  # sum of max(n_tokens, 1) over the waiting documents
        self._window_docs = limits.lookahead * limits.max_size
        self._window_tokens = limits.lookahead * limits.max_tokens

    def __len__(self) -> int:
        return len(self._docs)

    def add(self, docs: Iterable[Document], now: float | None = None) -> None:
        arrived = time.monotonic() if now is None else now
        for d in docs:
            self._docs.append(d)
            self._arrived.append(arrived)
            self._tokens += max(d.n_tokens, 1)

    def next_deadline(self) -> float | None:
        """Monotonic time at which the oldest waiting document's deadline expires."""
        if not self._docs:
            return None
        return self._arrived[0] + self._limits.max_wait_s

    def take(self, now: float | None = None, *, drain: bool = False) -> list[Batch]:
        """Remove and return the batches the policy says to run now."""
        if not self._docs:
            return []
        now = time.monotonic() if now is None else now
        oldest_wait = now - self._arrived[0]
        due = drain or oldest_wait >= self._limits.max_wait_s
        if not due and len(self._docs) < self._window_docs and self._tokens < self._window_tokens:
            return []
        docs, arrivals = self._docs, self._arrived
        cuts = cut_batches([d.n_tokens for d in docs], oldest_wait, self._limits, drain=drain)
        if not cuts:
            return []
        taken = {i for cut in cuts for i in cut.indices}
        batches = [Batch([docs[i] for i in cut.indices], cut, min(arrivals[i] for i in cut.indices)) for cut in cuts]
        self._keep([i for i in range(len(docs)) if i not in taken])
        return batches

    def drop(self, partitions: set[tuple[str, int]]) -> int:
        """Forget documents of partitions this worker no longer owns; returns how many."""
        before = len(self._docs)
        self._keep([i for i, d in enumerate(self._docs) if (d.source.topic, d.source.partition) not in partitions])
        return before - len(self._docs)

    def _keep(self, indices: list[int]) -> None:
        self._docs = [self._docs[i] for i in indices]
        self._arrived = [self._arrived[i] for i in indices]
        self._tokens = sum(max(d.n_tokens, 1) for d in self._docs)
