"""Per-partition offset watermarks (pure): commit only below the first unfinished offset.

Documents finish out of order (sorted batches, dedup hits, dead letters). A partition's committable
offset is the lowest offset still unfinished, or one past the highest seen when all are finished;
so everything below a committed offset has been published and acknowledged.
"""

from __future__ import annotations

from collections import OrderedDict

TopicPartitionKey = tuple[str, int]


class _Partition:
    __slots__ = ("pending", "next_offset")

    def __init__(self) -> None:
        # offset -> finished?, in the order offsets were seen (increasing within a partition)
        self.pending: OrderedDict[int, bool] = OrderedDict()
        self.next_offset: int | None = None

    def advance(self) -> None:
        while self.pending:
            offset, finished = next(iter(self.pending.items()))
            if not finished:
                return
            self.pending.popitem(last=False)
            self.next_offset = offset + 1


class OffsetTracker:
    def __init__(self) -> None:
        self._parts: dict[TopicPartitionKey, _Partition] = {}
        self._unfinished = 0

    def track(self, tp: TopicPartitionKey, offset: int) -> None:
        """Record that ``offset`` was received and is not yet finished."""
        part = self._parts.setdefault(tp, _Partition())
        if offset in part.pending or (part.next_offset is not None and offset < part.next_offset):
            return  # a re-delivery of something already tracked or finished
        part.pending[offset] = False
        self._unfinished += 1

    def finish(self, tp: TopicPartitionKey, offset: int) -> None:
        """Mark ``offset`` as published and acknowledged (or dead-lettered, or skipped by dedup)."""
        part = self._parts.get(tp)
        if part is None or offset not in part.pending:
            return  # the partition was revoked meanwhile
        if not part.pending[offset]:
            part.pending[offset] = True
            self._unfinished -= 1
            part.advance()

    def committable(self) -> dict[TopicPartitionKey, int]:
        """For each partition, the offset to commit: everything below it is finished.

        ``next_offset`` never passes the first unfinished offset, because ``advance`` stops there.
        """
        return {tp: p.next_offset for tp, p in self._parts.items() if p.next_offset is not None}

    def unfinished(self) -> int:
        """Offsets received and not yet finished, over all owned partitions."""
        return self._unfinished

    def forget(self, tps: set[TopicPartitionKey]) -> None:
        """Drop partitions this worker no longer owns; nothing is committed for them."""
        for tp in tps:
            part = self._parts.pop(tp, None)
            if part is not None:
                self._unfinished -= sum(1 for done in part.pending.values() if not done)
