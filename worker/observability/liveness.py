"""Whether the worker's event loop still makes progress: the answer behind ``/healthz``.

A loop stuck past ``loop_stall_timeout_s`` (a rebalance callback that never returns, an action
blocking the loop) would otherwise look healthy while the group waits on it forever.
"""

from __future__ import annotations

import logging
import time

__all__ = ["LoopLiveness"]

logger = logging.getLogger(__name__)


class LoopLiveness:
    """The main loop stamps each round; the probe thread asks whether the last stamp is too old."""

    def __init__(self, stall_timeout_s: float) -> None:
        self.stall_timeout_s = stall_timeout_s
        self.alive = True  # False once the worker stops or fails for good
        self._round: float | None = None  # when the current round began; None outside the main loop
        self._reported = False

    def begin_round(self) -> None:
        self._round = time.monotonic()

    def leave_loop(self) -> None:
        """Outside the main loop (draining at shutdown is bounded by the shutdown grace instead)."""
        self._round = None

    def round_age(self) -> float:
        """Seconds since the main loop began its current round; 0 outside it."""
        stamp = self._round
        return 0.0 if stamp is None else max(0.0, time.monotonic() - stamp)

    def check(self) -> bool:
        """Alive and completing rounds (called from the probe thread); logs each change once.

        The default timeout outlasts the longest legitimate stall: a commit's three broker calls at
        their time-outs plus a producer renewal.
        """
        if not self.alive:
            return False
        age = self.round_age()
        stalled = age > self.stall_timeout_s
        if stalled != self._reported:
            self._reported = stalled
            if stalled:
                logger.error("the event loop has not completed a round for %.0fs (--loop-stall-timeout-s / "
                             "AGENTFLEET_LOOP_STALL_TIMEOUT_S is %g): /healthz now fails", age, self.stall_timeout_s)
            else:
                logger.warning("the event loop completes rounds again: /healthz passes")
        return not stalled
