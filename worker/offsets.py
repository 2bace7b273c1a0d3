"""Which input offsets may be committed: never past a record that is not finished."""

from __future__ import annotations

import heapq
from typing import Hashable


class OffsetTracker:
    """Per (topic, partition): offsets consumed but unfinished, and the next offset to commit.

    Finishing is idempotent: a batch retried after an aborted transaction finishes its
    records again without disturbing the count.
    """

    def __init__(self) -> None:
        self._heaps: dict[Hashable, list[int]] = {}  # min-heap over open offsets (lazy deletion)
        self._open: dict[Hashable, set[int]] = {}
        self._next: dict[Hashable, int] = {}  # highest consumed + 1
        self._committed: dict[Hashable, int] = {}
        self.pending = 0

    def add(self, partition: Hashable, offset: int) -> None:
        open_offsets = self._open.setdefault(partition, set())
        if offset in open_offsets:
            return
        open_offsets.add(offset)
        heapq.heappush(self._heaps.setdefault(partition, []), offset)
        self._next[partition] = max(self._next.get(partition, 0), offset + 1)
        self.pending += 1

    def finish(self, partition: Hashable, offset: int) -> None:
        open_offsets = self._open.get(partition)
        if open_offsets is not None and offset in open_offsets:
            open_offsets.remove(offset)
            self.pending -= 1

    def committable(self, partition: Hashable) -> int | None:
        """The lowest unfinished offset, or next-to-consume when all are finished."""
        heap = self._heaps.get(partition)
        if heap is None:
            return None
        open_offsets = self._open[partition]
        while heap and heap[0] not in open_offsets:
            heapq.heappop(heap)
        return heap[0] if heap else self._next[partition]

    def changed(self) -> dict[Hashable, int]:
        """Partitions whose committable offset moved since :meth:`mark_committed`."""
        out = {}
        for partition in self._heaps:
            offset = self.committable(partition)
            if offset is not None and offset != self._committed.get(partition):
                out[partition] = offset
        return out

    def mark_committed(self, offsets: dict[Hashable, int]) -> None:
        self._committed.update(offsets)

    def drop(self, partition: Hashable) -> None:
        self.pending -= len(self._open.pop(partition, set()))
        self._heaps.pop(partition, None)
        self._next.pop(partition, None)
        self._committed.pop(partition, None)

    def partitions(self) -> list[Hashable]:
        return list(self._heaps)
