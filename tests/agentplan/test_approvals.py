"""Parked runs: an ApprovalRequestEvent parks its run until a decision or its timeout, exactly once,
across a crash (the state a worker would have committed), while the key's later inputs wait and other
keys run."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from agentplan import (
    Agent,
    AgentPlan,
    ApprovalDecisionEvent,
    ApprovalRequestEvent,
    ApprovalTimeoutEvent,
    ChatMessage,
    ChatRequestEvent,
    ChatResponseEvent,
    Engine,
    InputEvent,
    KeyDelta,
    MessageRole,
    OpenAIChatModelSetup,
    OutputEvent,
    ResourceDescriptor,
    RunnerContext,
    action,
    tool,
)
from agentplan.approvals import requires_approval
from agentplan.testing.llm_stub import StubLLMServer
from tests.agentplan.support import CONNECTION, make_config, run_async, stub_connection


def ask(event: InputEvent, ctx: RunnerContext) -> None:
    if event.input.get("ask"):
        ctx.send_event(ApprovalRequestEvent(request={"refund": event.input["n"]}, timeout_s=event.input.get("t")))
    else:
        ctx.send_event(OutputEvent(output={"n": event.input["n"], "ran": True}))


def decided(event: ApprovalDecisionEvent, ctx: RunnerContext) -> None:
    ctx.send_event(OutputEvent(output={"approved": event.approved, "by": event.decided_by}))


def timed_out(event: ApprovalTimeoutEvent, ctx: RunnerContext) -> None:
    ctx.send_event(OutputEvent(output={"timeout": event.request}))


def plan(**config: Any) -> AgentPlan:
    agent = Agent()
    agent.add_action("ask", [InputEvent], ask)
    agent.add_action("decided", [ApprovalDecisionEvent], decided)
    agent.add_action("timed_out", [ApprovalTimeoutEvent], timed_out)
    return AgentPlan.from_agent(agent, make_config(**config))


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def outputs(deltas: list[KeyDelta]) -> dict[Any, list[Any]]:
    by_key: dict[Any, list[Any]] = {}
    for delta in deltas:
        by_key.setdefault(delta.key, []).extend(output for _meta, output in delta.outputs)
    return by_key


def test_a_parked_run_resumes_on_its_decision_and_its_key_waits_meanwhile() -> None:
    async def main() -> None:
        engine = Engine(plan(max_concurrent_runs=1))  # a parked run must not hold the only run slot
        engine.submit("a", {"ask": True, "n": 1}, position=0, meta="a0")
        engine.submit("a", {"n": 2}, position=1, meta="a1")
        engine.submit("b", {"n": 3}, position=2, meta="b2")
        await engine.wait_quiet()
        (a, b) = sorted(engine.collect(), key=lambda d: str(d.key))
        assert a.outputs == [] and a.finished == [] and b.outputs == [("b2", {"n": 3, "ran": True})]
        ((meta, request),) = a.requests
        assert meta == "a0" and request["request"] == {"refund": 1} and request["key"] == "a"
        assert json.loads(a.state)["r"]["pk"]["id"] == request["request_id"]
        engine.deliver("a", ApprovalDecisionEvent(request_id="not-asked", approved=True), meta="d0")
        engine.deliver("a", ApprovalDecisionEvent(request_id=request["request_id"], approved=True,
                                                  decided_by="ops"), meta="d1")
        engine.deliver("a", ApprovalDecisionEvent(request_id=request["request_id"], approved=False), meta="d2")
        await engine.wait_idle()
        (a,) = engine.collect()
        assert [o for _m, o in a.outputs] == [{"approved": True, "by": "ops"}, {"n": 2, "ran": True}]
        assert sorted(a.skipped) == ["d0", "d2"]  # not parked for: ignored, finished at once
        assert sorted(a.finished) == ["a0", "a1", "d0", "d1", "d2"]
        assert a.requests == []

    run_async(main())


def test_a_crash_while_parked_resumes_the_wait_without_asking_again() -> None:
    async def main() -> None:
        first = Engine(plan())
        first.submit("a", {"ask": True, "n": 1}, position=5, meta="a5")
        await first.wait_quiet()
        (parked,) = first.collect()  # what the worker commits: state + request, in one transaction
        ((_meta, request),) = parked.requests
        await first.close()

        second = Engine(plan(), state_loader=lambda _key: parked.state)
        second.deliver("a", ApprovalDecisionEvent(request_id=request["request_id"], approved=False), meta="d")
        second.submit("a", {"ask": True, "n": 1}, position=5, meta="a5")  # the uncommitted input, replayed
        await second.wait_idle()
        (done,) = second.collect()
        assert done.requests == []  # already published with the parked state
        assert [o for _m, o in done.outputs] == [{"approved": False, "by": ""}]
        assert sorted(done.finished) == ["a5", "d"]
        assert "r" not in json.loads(done.state)

    run_async(main())


def test_a_decision_committed_with_its_resumed_state_is_not_applied_twice() -> None:
    async def main() -> None:
        first = Engine(plan())
        first.submit("a", {"ask": True, "n": 1}, position=5, meta="a5")
        await first.wait_quiet()
        ((_m, request),) = first.collect()[0].requests
        decision = ApprovalDecisionEvent(request_id=request["request_id"], approved=True)
        first.deliver("a", decision, meta="d")
        await first.wait_idle()
        (done,) = first.collect()
        await first.close()
        second = Engine(plan(), state_loader=lambda _key: done.state)
        second.deliver("a", decision, meta="d-again")  # re-read after a crash before its offset was committed
        (again,) = second.collect()
        assert again.skipped == ["d-again"] and again.outputs == []

    run_async(main())


def test_a_parked_run_times_out() -> None:
    async def main() -> None:
        engine = Engine(plan())
        engine.submit("a", {"ask": True, "n": 1, "t": 0.2}, position=0, meta="a0")
        engine.submit("a", {"n": 2}, position=1, meta="a1")
        await engine.wait_idle()
        (a,) = engine.collect()
        assert [o for _m, o in a.outputs] == [{"timeout": {"refund": 1}}, {"n": 2, "ran": True}]

    run_async(main(), timeout=5)


REFUNDS: list[int] = []


class RefundAgent(Agent):
    """A ReAct agent whose ``refund`` tool requires approval; its answer is the model's last reply."""

    def __init__(self, stub: StubLLMServer) -> None:
        super().__init__()
        self.add_resource(CONNECTION, stub_connection(stub))
        self.add_resource("model", ResourceDescriptor(clazz=OpenAIChatModelSetup, connection=CONNECTION,
                                                      model="stub-model", tools=["refund", "balance"]))

    @tool
    @requires_approval
    @staticmethod
    def refund(amount: int) -> str:
        """Refund money.

        Args:
            amount: How much.
        """
        REFUNDS.append(amount)
        return f"refunded {amount}"

    @tool
    @staticmethod
    def balance() -> str:
        """The balance."""
        return "balance 10"

    @action(InputEvent)
    @staticmethod
    def start(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.send_event(ChatRequestEvent(model="model", messages=[ChatMessage(role=MessageRole.USER,
                                                                             content=event.input)]))

    @action(ChatResponseEvent)
    @staticmethod
    def finish(event: ChatResponseEvent, ctx: RunnerContext) -> None:
        ctx.send_event(OutputEvent(output=event.response.content))


def test_a_tool_that_requires_approval_runs_only_when_approved(stub_llm: StubLLMServer) -> None:
    REFUNDS.clear()

    async def main() -> tuple[list[dict[str, Any]], list[Any]]:
        plan = AgentPlan.from_agent(RefundAgent(stub_llm), make_config())
        engine = Engine(plan)
        engine.submit("yes", '[[tool:refund {"amount": 5}]]', position=0)
        engine.submit("no", '[[tool:refund {"amount": 7}]]', position=1)
        engine.submit("free", "[[tool:balance {}]]", position=2)
        await engine.wait_quiet()
        deltas = engine.collect()
        requests = {d.key: r for d in deltas for _m, r in d.requests}
        assert REFUNDS == [] and set(requests) == {"yes", "no"}  # "free" needed no approval
        assert requests["yes"]["request"] == {"tools": [{"name": "refund", "arguments": {"amount": 5}}]}
        engine.deliver("yes", ApprovalDecisionEvent(request_id=requests["yes"]["request_id"], approved=True))
        engine.deliver("no", ApprovalDecisionEvent(request_id=requests["no"]["request_id"], approved=False,
                                                   decided_by="ops", comment="too much"))
        await engine.wait_idle()
        outputs = [(d.key, o) for d in deltas + engine.collect() for _m, o in d.outputs]
        await plan.aclose()
        return list(requests.values()), sorted(outputs)

    _requests, outputs = run_async(main())
    assert REFUNDS == [5]
    assert outputs == [("free", '{"result": "balance 10"}'), ("no", '{"result": "error: not approved: rejected by ops: '
                                                                      'too much"}'),
                       ("yes", '{"result": "refunded 5"}')]
