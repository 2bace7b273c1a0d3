"""Short-term memory TTL on the worker: idle keys whose memory expired are deleted with a changelog
tombstone, in the next checkpoint's transaction, so compaction drops them and no restore brings them
back (agentplan/runtime/state_ttl.py has the semantics).

A sweep reads the stores (the committed state) every half TTL, at most every minute. A key's state
also holds its progress marker, which skips replayed records that already finished (invariant 3), so
a key is deleted only once its progress is below the partition's committed input offset: no replay
can reach its records any more. Keys that are busy, or changed since their last commit, are left to
a later sweep (Engine.expire refuses them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from agentplan import Engine
from agentplan.runtime.state_ttl import ShortTermMemoryTtl, now_ms
from worker.state.store import PartitionStore

__all__ = ["StateExpiry"]

logger = logging.getLogger(__name__)

MAX_SWEEP_INTERVAL_S = 60.0
MIN_SWEEP_INTERVAL_S = 0.2

#: partition -> the offset below which no record of that partition will be processed again, if known.
ReplayBound = Callable[[int], "int | None"]


class StateExpiry:
    def __init__(self, ttl: ShortTermMemoryTtl, engine: Engine, replay_bound: ReplayBound) -> None:
        self.ttl = ttl
        self.engine = engine
        self.replay_bound = replay_bound
        self.interval_s = min(MAX_SWEEP_INTERVAL_S, max(MIN_SWEEP_INTERVAL_S, ttl.ttl_ms / 2000))
        self._last = time.monotonic()
        self.expired_total = 0

    def maybe_sweep(self, now: float, stores: Mapping[int, PartitionStore | None]) -> int:
        if now - self._last < self.interval_s:
            return 0
        self._last = now
        return self.sweep(stores)

    def sweep(self, stores: Mapping[int, PartitionStore | None]) -> int:
        """Expire what is due; returns the number of keys whose deletion the next checkpoint commits."""
        at = now_ms()
        expired = 0
        for partition, store in stores.items():
            if store is None:
                continue
            bound = self.replay_bound(partition)
            if bound is None:
                continue
            for key in store.keys():
                raw = store.get(key)
                if raw is None:
                    continue
                due, progress = self.ttl.persisted_expired(raw, at)
                if due and (progress is None or progress < bound) and self.engine.expire((partition, key)):
                    expired += 1
        if expired:
            logger.info("short-term memory TTL: deleting the state of %d idle keys", expired)
            self.expired_total += expired
        return expired
