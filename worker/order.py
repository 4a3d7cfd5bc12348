"""Per-key order, in one place: a document is admitted only when no earlier version of its id is
anywhere between admission and its release.

The key is (partition, document id): one document's versions share a partition because the input
is keyed by id. An admitted document holds its key through dedup, tokenizing, batching, the forward
pass (on any replica) and publication, until the main loop releases it: once its output is
acknowledged and its dedup mark written (at-least-once), or acknowledged (exactly-once, where the
checkpoint keeps the open transaction's marks in view until it commits). Later versions wait here in
arrival order; releasing a key admits the next one. So no two versions of one id are ever in flight
together, and nothing downstream needs to know about keys.
"""

from __future__ import annotations

from collections import deque

from worker.consume.decode import Document

Key = tuple[int, str]


class KeyGate:
    def __init__(self) -> None:
        self._held: dict[
            Key, deque[Document] | None
        ] = {}  # key -> later versions waiting (None: none)
        self._waiting = 0

    def __len__(self) -> int:
        """Documents waiting behind an earlier version of their id."""
        return self._waiting

    @property
    def held(self) -> int:
        return len(self._held)

    def admit(self, docs: list[Document]) -> list[Document]:
        """The documents that may go on now, in order; the rest wait for their key."""
        held = self._held
        out = []
        for d in docs:
            key = (d.source.partition, d.id)
            if key not in held:
                held[key] = None
                out.append(d)
                continue
            later = held[key]
            if later is None:
                later = held[key] = deque()
            later.append(d)
            self._waiting += 1
        return out

    def release(self, doc: Document) -> Document | None:
        """``doc`` is done; returns the next version of its id, now admitted (or None)."""
        key = (doc.source.partition, doc.id)
        later = self._held.get(key)
        if later:
            self._waiting -= 1
            return later.popleft()
        self._held.pop(key, None)
        return None

    def drop(self, tps: set[tuple[str, int]]) -> int:
        """Forget every key of these partitions; returns how many waiting documents went."""
        partitions = {p for _, p in tps}
        dropped = 0
        for key in [k for k in self._held if k[0] in partitions]:
            later = self._held.pop(key)
            if later:
                dropped += len(later)
        self._waiting -= dropped
        return dropped
