"""The bound on runs in progress at once (``max_concurrent_runs``), with a fast path when a slot is free.

An ``asyncio.Semaphore`` costs a coroutine, a waiter scan and a wake-up check per run even when nobody
waits; nearly every run finds a slot free, so :meth:`RunSlots.try_acquire` takes one with a counter.
:meth:`acquire` and :meth:`release` keep the semaphore's meaning (first come, first served; a slot
released while runs wait passes straight to the first of them).
"""

from __future__ import annotations

import asyncio
from collections import deque


class RunSlots:
    def __init__(self, limit: int) -> None:
        self.free = limit
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_acquire(self) -> bool:
        """Take a slot if one is free and no run waits for one."""
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot, then cancelled before using it: pass it on
            else:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to it: ``free`` is unchanged
                return
        self.free += 1
