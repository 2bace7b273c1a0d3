"""The in-flight window: how many records the worker takes, when it pauses, and when it commits early.

``--max-inflight`` bounds records consumed and not yet finished; with the checkpoint in flight, at most
twice that many are uncommitted (worker/offsets.py counts both). The main loop asks this window how
many records it may take, whether to commit before the interval, and lets it pause or resume intake.
"""

from __future__ import annotations

import logging
import time

from agentplan import Engine
from worker.offsets import OffsetTracker
from worker.processing.hot_keys import RESUME_FRACTION
from worker.processing.pausing import PauseReason, PausingManager

__all__ = ["InFlightWindow"]

logger = logging.getLogger(__name__)

PAUSE_AFTER_FULL_S = 3.0
IDLE_COMMIT_GAP_S = 0.005
MAX_BATCH = 500


class InFlightWindow:
    def __init__(self, limit: int, tracker: OffsetTracker, engine: Engine, pausing: PausingManager) -> None:
        self.limit = limit
        self.tracker = tracker
        self.engine = engine
        self.pausing = pausing
        self._last_take = time.monotonic()  # when intake last ran (consume() also serves rebalance callbacks)

    @property
    def paused(self) -> bool:
        return self.pausing.holds(PauseReason.WINDOW_FULL)

    def room(self) -> int:
        """How many records to take now: never more than the window has room for, so the bound holds
        exactly; 0 when full (the records wait in the client's fetch queue). While paused, consume() still
        runs, with one record's room, to serve rebalance callbacks (paused partitions return nothing)."""
        room = self.limit - self.tracker.unfinished
        if room <= 0 and not self.paused:
            return 0
        self._last_take = time.monotonic()
        return max(1, min(MAX_BATCH, room))

    def apply_backpressure(self) -> None:
        """Pause intake only when a full window has kept intake from running for PAUSE_AFTER_FULL_S.

        Pausing drops the client's prefetched records, and the fetch after resuming comes on the client's
        next broker wake-up, 0.5-1 s later (measured). While runs keep finishing, each commit frees room
        and intake runs, so a full window just stops taking records. Only a stall (e.g. a model outage)
        pauses: consume() must keep serving rebalance callbacks.
        """
        pending = self.tracker.unfinished
        if not self.paused and pending >= self.limit and time.monotonic() - self._last_take >= PAUSE_AFTER_FULL_S:
            self.pausing.pause_all(PauseReason.WINDOW_FULL)
            logger.debug("in-flight %d >= %d: paused intake", pending, self.limit)
        elif self.paused and pending <= self.limit * RESUME_FRACTION:
            self.pausing.resume_all(PauseReason.WINDOW_FULL)
            logger.debug("in-flight %d: resumed intake", pending)

    def commit_early(self, now: float, last_commit: float, took_records: bool) -> bool:
        """Whether to commit before the commit interval is up.

        - The window is full, partly of records the engine finished: collecting them into a checkpoint
          frees it without pausing (a pause/resume cycle costs a fetch round trip, ~0.9 s measured).
        - Nothing arrived and nothing runs, yet finished records wait: committing at once takes end-to-end
          latency at low rates from half the commit interval down to the commit's own few milliseconds.
          Under load records keep arriving, so the interval still batches.
        """
        t, e = self.tracker, self.engine
        if t.unfinished >= self.limit and e.inflight_runs + e.queued_inputs < t.unfinished:
            return True
        return not took_records and now - last_commit >= IDLE_COMMIT_GAP_S and t.unfinished > 0 and \
            e.inflight_runs == 0 and e.queued_inputs == 0
