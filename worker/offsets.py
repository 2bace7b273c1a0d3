"""Which input offsets may be committed, and how many records are in flight.

A record is in flight (:attr:`unfinished`) from the moment it is consumed until the engine is done
with it (its run finished, or it was skipped or refused): ``--max-inflight`` bounds these, the runs
the model endpoint sees. It stays uncommitted (:attr:`uncollected`) until a checkpoint collects it and
its offset may move (:meth:`committable`). Holding a record's slot until its checkpoint started (a wait
for the commit interval and the commit in flight after its run) made a slot 432 ms for a 272 ms run at
200 ms / 64 in flight (Little's law on the worker's own gauges, under load): 37% of the window's rate.
So the window frees it when the run ends and bounds the uncommitted records apart
(worker/processing/window.py).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping

TopicPart = tuple[str, int]


class OffsetTracker:
    """Per (topic, partition): offsets consumed and not collected, which of them the engine is done
    with, and the next offset to commit.

    Both marks are idempotent: a batch retried after an aborted transaction is collected again
    without disturbing the counts.
    """

    def __init__(self) -> None:
        self._heaps: dict[TopicPart, list[int]] = {}  # min-heap over open offsets (lazy deletion)
        self._open: dict[TopicPart, set[int]] = {}  # consumed, not collected
        self._ran: dict[TopicPart, set[int]] = {}  # open offsets the engine is done with
        self._next: dict[TopicPart, int] = {}  # highest consumed + 1
        self._committed: dict[TopicPart, int] = {}
        self.unfinished = 0  # open and not ran: in flight
        self.uncollected = 0  # open

    def add(self, partition: TopicPart, offset: int) -> None:
        open_offsets = self._open.get(partition)
        if open_offsets is None:  # once per partition: no setdefault (and its new empty containers) per record
            open_offsets = self._open[partition] = set()
            self._heaps[partition] = []
            self._next[partition] = 0
        elif offset in open_offsets:
            return
        open_offsets.add(offset)
        heapq.heappush(self._heaps[partition], offset)
        if offset >= self._next[partition]:
            self._next[partition] = offset + 1
        self.unfinished += 1
        self.uncollected += 1

    def ran(self, partition: TopicPart, offset: int) -> None:
        """The engine is done with the record: its slot is free; it stays open until collected."""
        open_offsets = self._open.get(partition)
        if open_offsets is None or offset not in open_offsets:
            return
        ran = self._ran.setdefault(partition, set())
        if offset not in ran:
            ran.add(offset)
            self.unfinished -= 1

    def collected(self, partition: TopicPart, offset: int) -> None:
        """A checkpoint took the record (its effects, or its dead letter): its offset may be committed."""
        open_offsets = self._open.get(partition)
        if open_offsets is not None and offset in open_offsets:
            open_offsets.remove(offset)
            self.uncollected -= 1
            ran = self._ran.get(partition)
            if ran is not None and offset in ran:
                ran.remove(offset)
            else:
                self.unfinished -= 1

    def committable(self, partition: TopicPart) -> int | None:
        """The lowest unfinished offset, or next-to-consume when all are finished."""
        heap = self._heaps.get(partition)
        if heap is None:
            return None
        open_offsets = self._open[partition]
        while heap and heap[0] not in open_offsets:
            heapq.heappop(heap)
        return heap[0] if heap else self._next[partition]

    def changed(self) -> dict[TopicPart, int]:
        """Partitions whose committable offset moved since the last :meth:`commit`."""
        out = {}
        for partition in self._heaps:
            offset = self.committable(partition)
            if offset is not None and offset != self._committed.get(partition):
                out[partition] = offset
        return out

    def commit(self, offsets: Mapping[TopicPart, int]) -> None:
        """A checkpoint committed ``offsets``."""
        self._committed.update(offsets)

    def committed(self, partition: TopicPart) -> int | None:
        """The offset this worker last committed for ``partition``, if it committed one."""
        return self._committed.get(partition)

    def consumed(self, partition: TopicPart) -> bool:
        """Whether records of ``partition`` were consumed since its assignment."""
        return partition in self._heaps

    def drop(self, partition: TopicPart) -> None:
        open_offsets, ran = self._open.pop(partition, set()), self._ran.pop(partition, set())
        self.uncollected -= len(open_offsets)
        self.unfinished -= len(open_offsets) - len(ran)
        self._heaps.pop(partition, None)
        self._next.pop(partition, None)
        self._committed.pop(partition, None)

    def partitions(self) -> list[TopicPart]:
        return list(self._heaps)
