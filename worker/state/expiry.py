"""Short-term memory TTL on the worker: idle keys whose memory expired are deleted with a changelog
tombstone, in the next checkpoint's transaction, so compaction drops them and no restore brings them
back (agentplan/runtime/state_ttl.py has the semantics).

A sweep reads the stores (the committed state) every half TTL, at most every minute, a few hundred
keys per loop round. A key's state
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
#: Keys read per loop round: a few ms of JSON decoding, however large the stores.
KEYS_PER_ROUND = 500

#: partition -> the offset below which no record of that partition will be processed again, if known.
ReplayBound = Callable[[int], "int | None"]


class StateExpiry:
    def __init__(self, ttl: ShortTermMemoryTtl, engine: Engine, replay_bound: ReplayBound,
                 keys_per_round: int = KEYS_PER_ROUND) -> None:
        self.ttl = ttl
        self.engine = engine
        self.replay_bound = replay_bound
        self.keys_per_round = keys_per_round
        self.interval_s = min(MAX_SWEEP_INTERVAL_S, max(MIN_SWEEP_INTERVAL_S, ttl.ttl_ms / 2000))
        self._last = time.monotonic()
        self._pass: list[int] | None = None  # partitions left in the sweep under way
        self._cursor: bytes | None = None  # last key read in the partition at the head of _pass
        self.expired_total = 0

    def maybe_sweep(self, now: float, stores: Mapping[int, PartitionStore | None]) -> int:
        """Called every loop round: starts a sweep every ``interval_s`` and advances the one under way by
        at most ``keys_per_round`` keys, so a large store never stalls the loop."""
        if self._pass is None:
            if now - self._last < self.interval_s:
                return 0
            self._last = now
            self._pass, self._cursor = sorted(stores), None
        return self._advance(stores)

    def sweep(self, stores: Mapping[int, PartitionStore | None]) -> int:
        """A whole sweep at once (tests, and shutdown-free callers)."""
        self._pass, self._cursor = sorted(stores), None
        expired = 0
        while self._pass is not None:
            expired += self._advance(stores)
        return expired

    def _advance(self, stores: Mapping[int, PartitionStore | None]) -> int:
        assert self._pass is not None
        at = now_ms()
        expired = 0
        budget = self.keys_per_round
        while self._pass and budget > 0:
            partition = self._pass[0]
            store = stores.get(partition)
            bound = self.replay_bound(partition) if store is not None else None
            batch = store.scan(self._cursor, budget) if store is not None and bound is not None else []
            for key, raw in batch:
                due, progress = self.ttl.persisted_expired(raw, at)
                safe = progress is None or (bound is not None and progress < bound)
                if due and safe and self.engine.expire((partition, key)):
                    expired += 1
            if len(batch) < budget:  # the partition is done (or gone, or not safe to sweep yet)
                self._pass.pop(0)
                self._cursor = None
            else:
                self._cursor = batch[-1][0]
            budget -= len(batch)
        if not self._pass:
            self._pass = None
        if expired:
            logger.info("short-term memory TTL: deleting the state of %d idle keys", expired)
            self.expired_total += expired
        return expired
