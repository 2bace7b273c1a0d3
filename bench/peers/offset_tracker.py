"""At-least-once bookkeeping for a consumer that finishes records out of order.

A partition's committable offset is the lowest offset taken and not yet finished (or one past
the last finished when none is open): committing it never skips an unfinished record, so a
crash replays at most the records in flight. Thread-safe: the asyncio peer marks records done
from its event loop and commits from its Kafka thread (rebalances included). Stdlib only: it
runs in the peers' venv.
"""

from __future__ import annotations

import threading
from collections import deque

__all__ = ["OffsetTracker"]

Partition = tuple[str, int]


class OffsetTracker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[Partition, deque[int]] = {}  # offsets taken, in the order taken (ascending)
        self._finished: dict[Partition, set[int]] = {}  # finished, not yet at the head of _open
        self._committable: dict[Partition, int] = {}
        self._committed: dict[Partition, int] = {}

    def taken(self, topic: str, partition: int, offset: int) -> None:
        with self._lock:
            self._open.setdefault((topic, partition), deque()).append(offset)
            self._finished.setdefault((topic, partition), set())

    def finished(self, topic: str, partition: int, offset: int) -> None:
        """The record's output is delivered. Ignored for a partition since forgotten (revoked)."""
        key = (topic, partition)
        with self._lock:
            open_offsets, finished = self._open.get(key), self._finished.get(key)
            if open_offsets is None or finished is None:
                return
            finished.add(offset)
            while open_offsets and open_offsets[0] in finished:
                finished.discard(open_offsets[0])
                self._committable[key] = open_offsets.popleft() + 1

    def in_flight(self) -> int:
        with self._lock:
            return sum(len(offsets) for offsets in self._open.values())

    def to_commit(self) -> dict[Partition, int]:
        """Committable offsets that moved since the last :meth:`committed` call for them."""
        with self._lock:
            return {key: offset for key, offset in self._committable.items() if self._committed.get(key) != offset}

    def committed(self, offsets: dict[Partition, int]) -> None:
        with self._lock:
            self._committed.update(offsets)

    def forget(self, partitions: list[Partition]) -> None:
        """Drop revoked partitions: their records still in flight may be processed again elsewhere."""
        with self._lock:
            for key in partitions:
                for table in (self._open, self._finished, self._committable, self._committed):
                    table.pop(key, None)
