"""How long the main loop waits between rounds, and what ends a wait early.

Every wait is a wake-up of the loop thread, and on this kind of host a wake-up alone costs ~50-100 us
of CPU (measured: an empty ``asyncio.sleep(0.002)`` round), so the loop waits only as often as intake
and commits need:
- the client's queue still held records (a full batch came back): go on at once;
- the window is full: nothing can be taken until a run ends, so wait for a run to end, a checkpoint's
  close to come back, or the next commit to fall due;
- there is room but nothing came: poll again after MIN_POLL_S, doubling while nothing comes, up to
  MAX_IDLE_POLL_S (a record that arrives then waits at most that long to be taken).
A run that ends while nothing else is in flight and a checkpoint's close coming back (from the
committer thread) end any wait, so an idle worker commits and settles at once.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["Cadence", "MAX_IDLE_POLL_S", "MIN_POLL_S"]

MIN_POLL_S = 0.002
MAX_IDLE_POLL_S = 0.008


class Cadence:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._poll_s = MIN_POLL_S
        self._waiter: asyncio.Future[None] | None = None
        self._woken = False  # a wake-up came while no wait was in progress: skip the next wait
        self._waiting_for_runs = False

    # -- what ends a wait --------------------------------------------------------------------------
    def wake(self) -> None:
        """End the wait in progress, or the next one (loop thread)."""
        waiter = self._waiter
        if waiter is None:
            self._woken = True
        elif not waiter.done():
            waiter.set_result(None)

    def wake_threadsafe(self) -> None:
        """:meth:`wake` from another thread (the committer's); a no-op once the loop is closed."""
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self.wake)

    def run_finished(self, unfinished: int) -> None:
        """A run ended, ``unfinished`` records are still in flight: wake the loop when that changes what it
        does now (a full window has room again; nothing runs, so finished records can be committed)."""
        if self._waiting_for_runs or unfinished == 0:
            self.wake()

    # -- the wait ------------------------------------------------------------------------------------
    def delay(self, took: int, asked: int, full: bool, next_commit_s: float) -> float:
        """How long to wait after a round that took ``took`` of ``asked`` records (0: go on at once);
        ``full``: the window has no room; ``next_commit_s``: how long until the next commit is due."""
        if took:
            self._poll_s = MIN_POLL_S
            return 0.0 if took >= asked else MIN_POLL_S  # a full batch: the client's queue may hold more
        if full:
            return max(MIN_POLL_S, next_commit_s)
        delay = self._poll_s
        self._poll_s = min(2 * self._poll_s, MAX_IDLE_POLL_S)
        return delay

    async def pause(self, took: int, asked: int, full: bool, next_commit_s: float) -> None:
        """Wait as :meth:`delay` says, or until :meth:`wake`; always lets the loop run its other tasks."""
        delay = self.delay(took, asked, full, next_commit_s)
        if delay == 0 or self._woken:
            self._woken = False
            await asyncio.sleep(0)
            return
        self._waiting_for_runs = full
        waiter = self._waiter = self._loop.create_future()
        timer = self._loop.call_later(delay, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
            self._waiting_for_runs = False


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
