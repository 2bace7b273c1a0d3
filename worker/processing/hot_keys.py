"""One key may hold at most a share of the in-flight window.

A key's runs are sequential, so a hot key's backlog would otherwise fill the window and stop every
other partition until it drains. Past its share, only the hot key's own partition pauses; it resumes
once the key's backlog is down to RESUME_FRACTION of the share.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable
from typing import cast

from agentplan import KeyDelta
from worker.processing.pausing import PauseReason, PausingManager
from worker.records import EngineKey

__all__ = ["HOT_KEY_SHARE", "HotKeys"]

logger = logging.getLogger(__name__)

HOT_KEY_SHARE = 0.25
RESUME_FRACTION = 0.75
TopicPart = tuple[str, int]


class HotKeys:
    """Per engine key: records submitted and not committed yet; pauses the partitions of keys over the share."""

    def __init__(self, max_inflight: int, pausing: PausingManager) -> None:
        self.limit = max(1, int(max_inflight * HOT_KEY_SHARE))
        self._pausing = pausing
        self._backlog: dict[Hashable, int] = {}
        self._hot: dict[TopicPart, set[Hashable]] = {}  # paused partition -> its hot keys

    def submitted(self, partition: TopicPart, engine_key: Hashable) -> None:
        backlog = self._backlog.get(engine_key, 0) + 1
        self._backlog[engine_key] = backlog
        if backlog >= self.limit:
            keys = self._hot.setdefault(partition, set())
            if not keys:
                self._pausing.pause([partition], PauseReason.HOT_KEY)
                logger.debug("a key holds %d in-flight records: partition %s[%d] paused until they drain",
                             backlog, *partition)
            keys.add(engine_key)

    def committed(self, deltas: Iterable[KeyDelta]) -> None:
        """Committed records leave their keys' backlogs; resume partitions whose hot keys drained."""
        for delta in deltas:
            done = sum(1 for meta in delta.finished if meta is not None)
            if done:
                left = self._backlog.get(delta.key, 0) - done
                if left > 0:
                    self._backlog[delta.key] = left
                else:
                    self._backlog.pop(delta.key, None)
        resume_below = self.limit * RESUME_FRACTION
        for partition, keys in list(self._hot.items()):
            keys.difference_update([k for k in keys if self._backlog.get(k, 0) <= resume_below])
            if not keys:
                del self._hot[partition]
                self._pausing.resume([partition], PauseReason.HOT_KEY)

    def drop(self, partitions: set[TopicPart], state_partitions: set[int]) -> None:
        self._backlog = {k: n for k, n in self._backlog.items() if cast(EngineKey, k)[0] not in state_partitions}
        for partition in partitions:
            self._hot.pop(partition, None)
