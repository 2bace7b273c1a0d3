"""RunSlots: the engine's bound on runs in progress (a semaphore with a counter fast path)."""

from __future__ import annotations

import asyncio

import pytest

from agentplan.runtime.run_slots import RunSlots


def test_free_slots_are_taken_without_waiting_and_the_bound_holds() -> None:
    slots = RunSlots(2)
    assert slots.try_acquire() and slots.try_acquire()
    assert not slots.try_acquire()
    slots.release()
    assert slots.try_acquire()


def test_a_released_slot_goes_to_the_first_waiter_before_any_newcomer() -> None:
    async def scenario() -> list[str]:
        slots = RunSlots(1)
        assert slots.try_acquire()
        order: list[str] = []

        async def run(name: str) -> None:
            await slots.acquire()
            order.append(name)

        first = asyncio.create_task(run("first"))
        second = asyncio.create_task(run("second"))
        await asyncio.sleep(0)  # both wait
        slots.release()
        assert not slots.try_acquire()  # handed to "first", not free for a newcomer
        await first
        assert not second.done()
        slots.release()
        await second
        assert slots.free == 0
        return order

    assert asyncio.run(scenario()) == ["first", "second"]


@pytest.mark.parametrize("handed_over", [False, True])
def test_a_cancelled_waiter_leaves_no_slot_behind(handed_over: bool) -> None:
    async def scenario() -> int:
        slots = RunSlots(1)
        assert slots.try_acquire()
        waiter = asyncio.create_task(slots.acquire())
        await asyncio.sleep(0)
        if handed_over:
            slots.release()  # the slot passes to the waiter, which is cancelled before it runs
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        if not handed_over:
            slots.release()
        return slots.free

    assert asyncio.run(scenario()) == 1
