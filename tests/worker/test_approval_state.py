"""``state inspect`` shows a parked run's request under documented names (state written by the engine)."""

from __future__ import annotations

import json

from agentplan import Agent, AgentPlan, ApprovalRequestEvent, Engine, InputEvent, RunnerContext
from tests.agentplan.support import make_config, run_async
from worker.operator_tools import describe_state


def ask(event: InputEvent, ctx: RunnerContext) -> None:
    ctx.send_event(ApprovalRequestEvent(request={"refund": event.input}, timeout_s=60))


def test_a_parked_run_shows_its_request() -> None:
    agent = Agent()
    agent.add_action("ask", [InputEvent], ask)

    async def parked_state() -> tuple[bytes, str]:
        engine = Engine(AgentPlan.from_agent(agent, make_config()))
        engine.submit("k", 12, position=3, meta="m3")
        await engine.wait_quiet()
        (delta,) = engine.collect()
        await engine.close()
        return delta.state, delta.requests[0][1]["request_id"]

    state, request_id = run_async(parked_state())
    shown = describe_state(json.loads(state))["unfinished_run"]
    assert shown["parked"]["request_id"] == request_id
    assert shown["parked"]["deadline"] - shown["parked"]["created"] == 60
    assert [e["type"] for e in shown["pending_events"]] == ["agentplan.approvals:ApprovalRequestEvent"]
