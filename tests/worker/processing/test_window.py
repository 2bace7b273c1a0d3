"""The in-flight window: a slot is free when its run ends; uncommitted records are bounded apart."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from agentplan import Agent, AgentPlan, Engine, InputEvent, OutputEvent, RunnerContext
from agentplan.config import AgentConfiguration
from worker.offsets import OffsetTracker
from worker.processing.pausing import PauseReason, PausingManager
from worker.processing.window import InFlightWindow

P = ("in", 0)


class FakeEngine:
    inflight_runs = 0
    queued_inputs = 0


class NullConsumer:
    def pause(self, partitions: list[Any]) -> None: ...
    def resume(self, partitions: list[Any]) -> None: ...


def window(limit: int, in_checkpoint: list[int]) -> tuple[InFlightWindow, OffsetTracker, FakeEngine]:
    tracker, engine = OffsetTracker(), FakeEngine()
    pausing = PausingManager(NullConsumer())
    pausing.assign([P])
    return (InFlightWindow(limit, tracker, cast(Engine, engine), pausing,
                           collected_uncommitted=lambda: in_checkpoint[0]), tracker, engine)


def take(tracker: OffsetTracker, offsets: range) -> None:
    for offset in offsets:
        tracker.add(P, offset)


def test_a_finished_run_frees_its_slot_before_its_checkpoint() -> None:
    in_checkpoint = [0]
    w, tracker, _engine = window(4, in_checkpoint)
    take(tracker, range(4))
    assert w.room() == 0
    tracker.ran(P, 0)
    tracker.ran(P, 1)
    assert w.room() == 2  # no commit needed to take two more


def test_uncommitted_records_stay_within_twice_the_limit() -> None:
    in_checkpoint = [0]
    w, tracker, _engine = window(4, in_checkpoint)
    take(tracker, range(4))
    for offset in range(4):
        tracker.ran(P, offset)
    assert w.room() == 4
    take(tracker, range(4, 8))
    for offset in range(4, 7):
        tracker.ran(P, offset)  # 1 in flight, 7 finished and uncollected
    assert w.room() == 0 and w.uncommitted() == 8
    for offset in range(6):
        tracker.collected(P, offset)
    in_checkpoint[0] = 6  # collected, commit in flight: still uncommitted
    assert w.room() == 0
    in_checkpoint[0] = 0  # committed
    assert w.room() == 3  # in flight bound: 1 of 4 runs


def test_commits_early_only_when_the_uncommitted_bound_holds_finished_records() -> None:
    in_checkpoint = [0]
    w, tracker, engine = window(2, in_checkpoint)
    take(tracker, range(2))
    engine.inflight_runs = 2
    assert not w.commit_early(1.0, 0.0, took_records=True)  # full of running records: a commit frees nothing
    tracker.ran(P, 0)
    tracker.ran(P, 1)
    take(tracker, range(2, 4))
    assert w.commit_early(1.0, 0.0, took_records=True)


def test_a_stalled_full_window_pauses_and_resumes_at_three_quarters(monkeypatch: Any) -> None:
    clock = [100.0]
    monkeypatch.setattr("worker.processing.window.time.monotonic", lambda: clock[0])
    w, tracker, _engine = window(8, [0])
    take(tracker, range(8))
    assert w.room() == 0
    w.apply_backpressure()
    assert not w.paused
    clock[0] += 3.1
    w.apply_backpressure()
    assert w.paused and w.pausing.reasons(P) == {PauseReason.WINDOW_FULL}
    tracker.ran(P, 0)
    w.apply_backpressure()
    assert w.paused  # 7 of 8 in flight: resumes at 6
    tracker.ran(P, 1)
    w.apply_backpressure()
    assert not w.paused


def test_the_engine_reports_each_input_it_is_done_with_before_any_collect() -> None:
    """Runs that finish, and inputs skipped as already processed, free their slots at once."""
    def echo(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.send_event(OutputEvent(output=event.input))

    agent = Agent()
    agent.add_action("echo", [InputEvent], echo)
    tracker, done = OffsetTracker(), []

    def finished(meta: Any) -> None:
        done.append(meta)
        tracker.ran(P, meta)

    engine = Engine(AgentPlan.from_agent(agent, AgentConfiguration()), on_input_finished=finished)

    async def drive() -> None:
        for offset in (0, 1, 2):
            tracker.add(P, offset)
            engine.submit("k", offset, position=offset, meta=offset)
        await engine.wait_idle()
        tracker.add(P, 3)
        engine.submit("k", "again", position=1, meta=3)  # at or below the key's progress: skipped
        await engine.wait_idle()

    asyncio.run(drive())
    assert done == [0, 1, 2, 3]
    assert (tracker.unfinished, tracker.uncollected) == (0, 4)  # all free, none collected yet
