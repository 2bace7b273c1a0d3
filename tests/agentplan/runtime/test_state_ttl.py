"""Short-term memory TTL on the local runner and the engine, on a fake wall clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentplan import Agent, AgentPlan, Engine, Event, InputEvent, OutputEvent, RunnerContext, action
from agentplan.runtime import local_execution_environment, state_ttl
from agentplan.runtime.local_execution_environment import LocalExecutionEnvironment
from tests.agentplan.support import make_config


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(state_ttl, "now_ms", fake)
    monkeypatch.setattr(local_execution_environment, "now_ms", fake)
    return fake


class Visits(Agent):
    """Input "write": count a visit; "read": only report the count."""

    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def visit(event: Event, ctx: RunnerContext) -> None:
        visits = ctx.short_term_memory.get("visits") or 0
        if InputEvent.from_event(event).input == "write":
            visits += 1
            ctx.short_term_memory.set("visits", visits)
        ctx.send_event(OutputEvent(output=visits))


def run(env: LocalExecutionEnvironment, value: str) -> Any:
    outputs = env.from_list([{"key": "k", "value": value}]).apply(Visits()).to_list()
    before = len(outputs)
    env.execute()
    return outputs[before:][0]["k"]


@pytest.mark.parametrize(("update_type", "visits_after_read_renewal"), [
    ("ON_CREATE_AND_WRITE", 1),  # the read at +800 does not renew: expired at +1500, cleaned up
    ("ON_READ_AND_WRITE", 2),  # the read renews: 700 ms old at +1500
])
def test_update_type_decides_what_renews(clock: Clock, update_type: str, visits_after_read_renewal: int) -> None:
    env = LocalExecutionEnvironment(config=make_config(short_term_memory_state_ttl_ms=1000,
                                                       short_term_memory_state_ttl_update_type=update_type))
    assert run(env, "write") == 1
    clock.ms += 800
    assert run(env, "read") == 1
    clock.ms += 700
    assert run(env, "write") == visits_after_read_renewal


def test_expired_memory_is_cleaned_up_at_execute_and_kept_without_ttl(clock: Clock) -> None:
    env = LocalExecutionEnvironment(config=make_config(short_term_memory_state_ttl_ms=1000))
    assert run(env, "write") == 1
    clock.ms += 1001
    env.from_list([]).apply(Visits())
    env.execute()  # the cleanup runs before any input
    assert env.state == {}
    no_ttl = LocalExecutionEnvironment(config=make_config())
    assert run(no_ttl, "write") == 1
    clock.ms += 10**9
    assert run(no_ttl, "write") == 2


@pytest.mark.parametrize(("visibility", "visits"), [("NEVER_RETURN_EXPIRED", 1),
                                                    ("RETURN_EXPIRED_IF_NOT_CLEANED_UP", 2)])
def test_visibility_of_expired_memory_not_cleaned_up(clock: Clock, visibility: str, visits: int) -> None:
    config = make_config(short_term_memory_state_ttl_ms=1000, short_term_memory_state_ttl_visibility=visibility)
    plan = AgentPlan.from_agent(Visits(), config)

    async def one_run(state: bytes | None) -> tuple[Any, bytes | None]:
        engine = Engine(plan, state_loader=lambda key: state)
        engine.submit("k", "write")
        await engine.wait_idle()
        [delta] = engine.collect()
        return delta.outputs[0][1], delta.state

    first, state = asyncio.run(one_run(None))
    clock.ms += 5000  # expired, and no cleanup ran (the engine alone never deletes)
    assert first == 1 and asyncio.run(one_run(state))[0] == visits
