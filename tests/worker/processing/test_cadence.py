"""The main loop's cadence: waits as long as intake allows, and ends a wait when a run or a commit changes things."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from worker import event_loop
from worker.event_loop import EventLoop
from worker.processing.cadence import MAX_IDLE_POLL_S, MIN_POLL_S, Cadence

T = TypeVar("T")

# The wake-ups are checked on both loops the worker may run on (uvloop wakes only on call_soon_threadsafe).
LOOPS = pytest.mark.parametrize("loop_kind", [EventLoop.ASYNCIO, EventLoop.UVLOOP], ids=["asyncio", "uvloop"])


def run_on(loop_kind: EventLoop, coro: Coroutine[Any, Any, T]) -> T:
    if loop_kind is EventLoop.UVLOOP:
        pytest.importorskip("uvloop")
    return event_loop.run(asyncio.wait_for(coro, 20.0), loop_kind)

LONG_S = 5.0  # a wait that, unless something ends it early, outlasts the test's bound by far


def idle_cadence() -> Cadence:
    """For :meth:`Cadence.delay`, which never touches the loop."""
    loop = asyncio.new_event_loop()
    loop.close()
    return Cadence(loop)


def test_idle_polls_back_off_up_to_the_bound_and_reset_on_a_record() -> None:
    cadence = idle_cadence()
    empty = [cadence.delay(0, 500, False, LONG_S) for _ in range(6)]
    assert empty[:3] == [MIN_POLL_S, 2 * MIN_POLL_S, 4 * MIN_POLL_S]
    assert empty[-1] == MAX_IDLE_POLL_S == max(empty)
    assert cadence.delay(3, 500, False, LONG_S) == MIN_POLL_S  # some came: poll again soon
    assert cadence.delay(0, 500, False, LONG_S) == MIN_POLL_S  # and the back-off starts over


def test_a_full_batch_goes_on_at_once_and_a_full_window_waits_for_the_commit() -> None:
    cadence = idle_cadence()
    assert cadence.delay(500, 500, False, LONG_S) == 0
    assert cadence.delay(0, 0, True, 0.07) == 0.07
    assert cadence.delay(0, 0, True, -1.0) == MIN_POLL_S  # never a busy loop


async def timed_pause(cadence: Cadence, took: int, asked: int, full: bool, next_commit_s: float) -> float:
    began = time.monotonic()
    await cadence.pause(took, asked, full, next_commit_s)
    return time.monotonic() - began


@LOOPS
def test_a_run_ending_wakes_a_full_window_at_once(loop_kind: EventLoop) -> None:
    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        cadence = Cadence(loop)
        loop.call_later(0.01, cadence.run_finished, 100)  # others still in flight, but there is room again
        return await timed_pause(cadence, 0, 0, True, LONG_S)

    assert run_on(loop_kind, scenario()) < LONG_S / 2


@LOOPS
def test_while_there_is_room_only_the_last_run_ending_wakes_the_loop(loop_kind: EventLoop) -> None:
    async def woken_by(unfinished: int) -> bool:
        cadence = Cadence(asyncio.get_running_loop())
        waiting = asyncio.ensure_future(cadence.pause(0, 500, False, LONG_S))
        await asyncio.sleep(0)  # the wait has begun
        cadence.run_finished(unfinished)
        for _ in range(3):
            await asyncio.sleep(0)  # far less than the MIN_POLL_S the wait would take unwoken
        done = waiting.done()
        await waiting
        return done

    assert not run_on(loop_kind, woken_by(3))  # others still run: no reason for a round now
    assert run_on(loop_kind, woken_by(0))  # the last one: commit its results at once


@LOOPS
def test_a_commit_closing_on_another_thread_ends_the_wait(loop_kind: EventLoop) -> None:
    async def scenario() -> float:
        cadence = Cadence(asyncio.get_running_loop())
        threading.Timer(0.02, cadence.wake_threadsafe).start()
        return await timed_pause(cadence, 0, 0, True, LONG_S)

    assert run_on(loop_kind, scenario()) < LONG_S / 2


@LOOPS
def test_a_wake_between_waits_skips_the_next_wait(loop_kind: EventLoop) -> None:
    async def scenario() -> float:
        cadence = Cadence(asyncio.get_running_loop())
        cadence.wake()  # e.g. the last run ended while the round was running
        return await timed_pause(cadence, 0, 0, True, LONG_S)

    assert run_on(loop_kind, scenario()) < LONG_S / 2


@LOOPS
def test_waking_after_the_loop_closed_is_harmless(loop_kind: EventLoop) -> None:
    loop = pytest.importorskip("uvloop").new_event_loop() if loop_kind is EventLoop.UVLOOP else asyncio.new_event_loop()
    cadence = Cadence(loop)
    loop.close()
    cadence.wake_threadsafe()  # a late commit result at shutdown
