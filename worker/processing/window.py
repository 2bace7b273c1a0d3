"""The in-flight window: how many records the worker takes, when it pauses, and when it commits early.

Two bounds, both counted in worker/offsets.py:
- ``--max-inflight`` records in flight: consumed and not yet finished by the engine (running, queued
  behind their key, buffered while their partition restores). These are the runs the model endpoint
  sees, so the window's rate is ``max-inflight / latency``: a slot is free as soon as its run ends.
- twice that many uncommitted: in flight, finished and waiting for their checkpoint, or in the
  checkpoint being committed. This bounds what a crash makes the next owner redo.
The main loop asks this window how many records it may take, whether to commit before the interval, and
lets it pause or resume intake.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from agentplan import Engine
from worker.offsets import OffsetTracker
from worker.processing.hot_keys import RESUME_FRACTION
from worker.processing.pausing import PauseReason, PausingManager

__all__ = ["InFlightWindow"]

logger = logging.getLogger(__name__)

PAUSE_AFTER_FULL_S = 3.0
IDLE_COMMIT_GAP_S = 0.005
MAX_BATCH = 500
UNCOMMITTED_FACTOR = 2


class InFlightWindow:
    def __init__(self, limit: int, tracker: OffsetTracker, engine: Engine, pausing: PausingManager,
                 collected_uncommitted: Callable[[], int] = lambda: 0) -> None:
        """``collected_uncommitted``: records collected into a checkpoint not committed yet (the checkpointer's)."""
        self.limit = limit
        self.uncommitted_limit = UNCOMMITTED_FACTOR * limit
        self.tracker = tracker
        self.engine = engine
        self.pausing = pausing
        self._collected_uncommitted = collected_uncommitted
        self._last_take = time.monotonic()  # when intake last ran (consume() also serves rebalance callbacks)

    @property
    def paused(self) -> bool:
        return self.pausing.holds(PauseReason.WINDOW_FULL)

    def uncommitted(self) -> int:
        return self.tracker.uncollected + self._collected_uncommitted()

    def free(self) -> int:
        """Records the window can take before either bound is reached (<= 0: full)."""
        return min(self.limit - self.tracker.unfinished, self.uncommitted_limit - self.uncommitted())

    def room(self) -> int:
        """How many records to take now: never more than the window has room for, so the bounds hold
        exactly; 0 when full (the records wait in the client's fetch queue). While paused, consume() still
        runs, with one record's room, to serve rebalance callbacks (paused partitions return nothing)."""
        room = self.free()
        if room <= 0 and not self.paused:
            return 0
        self._last_take = time.monotonic()
        return max(1, min(MAX_BATCH, room))

    def apply_backpressure(self) -> None:
        """Pause intake only when a full window has kept intake from running for PAUSE_AFTER_FULL_S.

        Pausing drops the client's prefetched records, and the fetch after resuming comes on the client's
        next broker wake-up, 0.5-1 s later (measured). While runs keep finishing, each frees room and
        intake runs, so a full window just stops taking records. Only a stall (e.g. a model outage, or
        commits that cannot complete) pauses: consume() must keep serving rebalance callbacks.
        """
        if not self.paused and self.free() <= 0 and time.monotonic() - self._last_take >= PAUSE_AFTER_FULL_S:
            self.pausing.pause_all(PauseReason.WINDOW_FULL)
            logger.debug("in-flight %d of %d, uncommitted %d of %d: paused intake", self.tracker.unfinished,
                         self.limit, self.uncommitted(), self.uncommitted_limit)
        elif self.paused and self.tracker.unfinished <= self.limit * RESUME_FRACTION and \
                self.uncommitted() <= self.uncommitted_limit * RESUME_FRACTION:
            self.pausing.resume_all(PauseReason.WINDOW_FULL)
            logger.debug("in-flight %d: resumed intake", self.tracker.unfinished)

    def commit_early(self, now: float, last_commit: float, took_records: bool) -> bool:
        """Whether to commit before the commit interval is up.

        - The uncommitted bound is reached, partly by finished records: collecting them into a checkpoint
          frees room without pausing (a pause/resume cycle costs a fetch round trip, ~0.9 s measured).
        - Nothing arrived and nothing runs, yet finished records wait: committing at once takes end-to-end
          latency at low rates from half the commit interval down to the commit's own few milliseconds.
          Under load records keep arriving, so the interval still batches.
        """
        t, e = self.tracker, self.engine
        if self.uncommitted() >= self.uncommitted_limit and t.uncollected > t.unfinished:
            return True
        return not took_records and now - last_commit >= IDLE_COMMIT_GAP_S and t.uncollected > 0 and \
            e.inflight_runs == 0 and e.queued_inputs == 0
