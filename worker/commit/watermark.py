"""Per-partition offset watermarks (pure): commit only below the first unfinished offset.

Documents finish out of order (sorted batches, dedup hits, dead letters), and nothing here assumes
they arrive in offset order either. A partition's committable offset is its lowest unfinished
offset is one past the highest finished offset below its lowest unfinished one; so everything below
a committed offset has been published and acknowledged. A min-heap of tracked offsets keeps that
cheap: finished offsets are popped from its top when the lowest one finishes.
"""

from __future__ import annotations

import heapq

TopicPartitionKey = tuple[str, int]


class _Partition:
    __slots__ = ("heap", "next_offset", "unfinished")

    def __init__(self) -> None:
        self.unfinished: set[int] = set()
        self.heap: list[int] = []  # every tracked offset not yet popped; finished ones pop lazily
        self.next_offset: int | None = (
            None  # one past the highest finished offset with nothing unfinished below
        )

    def committable(self) -> int | None:
        heap, unfinished = self.heap, self.unfinished
        while heap and heap[0] not in unfinished:
            self.next_offset = heapq.heappop(heap) + 1
        return self.next_offset


class OffsetTracker:
    def __init__(self) -> None:
        self._parts: dict[TopicPartitionKey, _Partition] = {}
        self._unfinished = 0

    def track(self, tp: TopicPartitionKey, offset: int) -> None:
        """Record that ``offset`` was received and is not yet finished."""
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = _Partition()
        if offset in part.unfinished or (
            part.next_offset is not None and offset < part.next_offset
        ):
            return  # a re-delivery of something already tracked, or finished with nothing open below
        part.unfinished.add(offset)
        heapq.heappush(part.heap, offset)
        self._unfinished += 1

    def finish(self, tp: TopicPartitionKey, offset: int) -> None:
        """Mark ``offset`` as published and acknowledged (or dead-lettered, or skipped by dedup)."""
        part = self._parts.get(tp)
        if part is not None and offset in part.unfinished:
            part.unfinished.discard(offset)
            self._unfinished -= 1
            if part.heap[0] == offset:  # the lowest finished: the floor moves up now
                part.committable()

    def committable(self) -> dict[TopicPartitionKey, int]:
        """For each partition, the offset to commit: everything below it is finished."""
        out = {}
        for tp, part in self._parts.items():
            offset = part.committable()
            if offset is not None:
                out[tp] = offset
        return out

    def unfinished(self) -> int:
        """Offsets received and not yet finished, over all owned partitions."""
        return self._unfinished

    def forget(self, tps: set[TopicPartitionKey]) -> None:
        """Drop partitions this worker no longer owns (or reads again): nothing is committed for them."""
        for tp in tps:
            part = self._parts.pop(tp, None)
            if part is not None:
                self._unfinished -= len(part.unfinished)
