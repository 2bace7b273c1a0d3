"""Which input offsets may be committed: never past a record that is not finished."""

from __future__ import annotations

import heapq


class OffsetTracker:
    """Per partition: offsets consumed but unfinished, and the next offset to commit."""

    def __init__(self) -> None:
        self._heaps: dict[int, list[int]] = {}
        self._done: dict[int, set[int]] = {}
        self._next: dict[int, int] = {}  # highest consumed + 1
        self._committed: dict[int, int] = {}
        self.pending = 0

    def add(self, partition: int, offset: int) -> None:
        heapq.heappush(self._heaps.setdefault(partition, []), offset)
        self._done.setdefault(partition, set())
        self._next[partition] = max(self._next.get(partition, 0), offset + 1)
        self.pending += 1

    def finish(self, partition: int, offset: int) -> None:
        done = self._done.get(partition)
        if done is None or offset in done:
            return
        done.add(offset)
        self.pending -= 1

    def committable(self, partition: int) -> int | None:
        """The lowest unfinished offset, or next-to-consume when all are finished."""
        heap = self._heaps.get(partition)
        if heap is None:
            return None
        done = self._done[partition]
        while heap and heap[0] in done:
            done.discard(heapq.heappop(heap))
        return heap[0] if heap else self._next[partition]

    def changed(self) -> dict[int, int]:
        """Partitions whose committable offset moved since :meth:`mark_committed`."""
        out = {}
        for partition in self._heaps:
            offset = self.committable(partition)
            if offset is not None and offset != self._committed.get(partition):
                out[partition] = offset
        return out

    def mark_committed(self, offsets: dict[int, int]) -> None:
        self._committed.update(offsets)

    def drop(self, partition: int) -> None:
        heap = self._heaps.pop(partition, [])
        done = self._done.pop(partition, set())
        self.pending -= len(heap) - len(done & set(heap))
        self._next.pop(partition, None)
        self._committed.pop(partition, None)

    def partitions(self) -> list[int]:
        return list(self._heaps)
