"""Model fallback on the local environment with two stub servers over HTTP: a down primary and a 429-ing
one hand calls to the fallback, metrics are labelled by the model used, a probe brings the primary back,
and a replay after a crash reuses the fallback's journaled answer."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agentplan import (
    Agent,
    AgentPlan,
    ChatMessage,
    ChatRequestEvent,
    ChatResponseEvent,
    Engine,
    InputEvent,
    LocalExecutionEnvironment,
    MessageRole,
    OpenAIChatModelConnection,
    OpenAIChatModelSetup,
    OutputEvent,
    ResourceDescriptor,
    RunnerContext,
    codec,
)
from agentplan import fallback as fallback_module
from agentplan.chat_models import ChatResult
from agentplan.endpoints import model_endpoints
from agentplan.limits import endpoint_limits
from agentplan.metrics import RecordingMetrics
from agentplan.testing.llm_stub import StubLLMServer, StubReply
from tests.agentplan.support import make_config, run_async

SCHEMA = {"type": "object"}


def ask(event: InputEvent, ctx: RunnerContext) -> None:
    schema = SCHEMA if ctx.config.get("structured") else None
    ctx.send_event(ChatRequestEvent(model="primary", messages=[ChatMessage(role=MessageRole.USER, content=event.input)],
                                    output_schema=schema))


def answer(event: ChatResponseEvent, ctx: RunnerContext) -> None:
    ctx.send_event(OutputEvent(output=event.structured_output or event.response.content))


def agent_for(primary: StubLLMServer, backup: StubLLMServer, **primary_limits: Any) -> Agent:
    agent = Agent()
    agent.add_resource("llm_a", ResourceDescriptor(clazz=OpenAIChatModelConnection, api_base_url=primary.base_url,
                                                   api_key="k", timeout=5.0, **primary_limits))
    agent.add_resource("llm_b", ResourceDescriptor(clazz=OpenAIChatModelConnection, api_base_url=backup.base_url,
                                                   api_key="k", timeout=5.0))
    agent.add_resource("primary", ResourceDescriptor(clazz=OpenAIChatModelSetup, connection="llm_a", model="model-a",
                                                     fallback=["backup"]))
    agent.add_resource("backup", ResourceDescriptor(clazz=OpenAIChatModelSetup, connection="llm_b", model="model-b"))
    agent.add_action("ask", [InputEvent], ask)
    agent.add_action("answer", [ChatResponseEvent], answer)
    return agent


@pytest.fixture(autouse=True)
def fresh_registries() -> Iterator[None]:
    model_endpoints.clear()
    endpoint_limits.clear()
    yield
    model_endpoints.clear()
    endpoint_limits.clear()


@pytest.fixture
def stubs() -> Iterator[tuple[StubLLMServer, StubLLMServer]]:
    primary, backup = StubLLMServer().start(), StubLLMServer().start()
    try:
        yield primary, backup
    finally:
        primary.stop()
        backup.stop()


def run(env: LocalExecutionEnvironment, agent: Agent, *texts: str) -> list[Any]:
    output = env.from_list([{"key": "k", "value": t} for t in texts]).apply(agent).to_list()
    env.execute()
    return [next(iter(o.values())) for o in output]


def test_a_down_primary_hands_calls_to_the_fallback_until_a_probe_finds_it_back(
        stubs: tuple[StubLLMServer, StubLLMServer], monkeypatch: pytest.MonkeyPatch) -> None:
    primary, backup = stubs
    primary.fail_next(3, "503")  # the third failure in a row marks the endpoint down
    env = LocalExecutionEnvironment(config=make_config(retry_backoff_s=0.001))
    assert run(env, agent_for(primary, backup), "one", "two") == ["echo: one", "echo: two"]
    assert [r["status"] for r in primary.requests] == [503, 503, 503]  # "two" went straight to the fallback
    assert [r["model"] for r in backup.requests] == ["model-b", "model-b"]
    metrics = env.metrics
    assert isinstance(metrics, RecordingMetrics)
    assert metrics.llm_requests_by_model == {"model-a": 3, "model-b": 2}
    assert metrics.fallbacks == {("primary", "backup"): 2}

    # A down endpoint gets a probe once per interval; its answer makes it the first choice again.
    monkeypatch.setattr(fallback_module, "PROBE_INTERVAL_S", 0.0)
    env = LocalExecutionEnvironment(config=make_config(retry_backoff_s=0.001))
    assert run(env, agent_for(primary, backup), "three", "four") == ["echo: three", "echo: four"]
    assert [r["status"] for r in primary.requests] == [503, 503, 503, 200, 200]
    assert len(backup.requests) == 2


def test_a_rate_limited_primary_pauses_and_the_fallback_answers_at_once(
        stubs: tuple[StubLLMServer, StubLLMServer]) -> None:
    primary, backup = stubs
    primary.retry_after_s = 5.0
    primary.fail_next(1, "429")
    env = LocalExecutionEnvironment(config=make_config(retry_backoff_s=0.001))
    started = time.monotonic()
    assert run(env, agent_for(primary, backup, max_concurrency=4), "one", "two") == ["echo: one", "echo: two"]
    assert time.monotonic() - started < 3.0  # neither the call nor the next one waited out the Retry-After
    assert [r["status"] for r in primary.requests] == [429]  # paused: "two" did not even try it
    assert len(backup.requests) == 2
    metrics = env.metrics
    assert isinstance(metrics, RecordingMetrics)
    assert metrics.fallbacks == {("primary", "backup"): 2} and metrics.transient_retries == {}
    (limiter,) = endpoint_limits.statuses()
    assert limiter.url == primary.base_url and limiter.in_flight == 0


def test_a_replay_reuses_the_fallbacks_journaled_answer() -> None:
    def backup_answers(request: dict[str, Any]) -> StubReply:
        repaired = any("not valid for the schema" in str(m.get("content")) for m in request["messages"])
        return StubReply(content='{"by": "backup"}' if repaired else "no json here")

    primary, backup = StubLLMServer().start(), StubLLMServer(responder=backup_answers, latency_ms=300).start()
    try:
        agent = agent_for(primary, backup)
        text = '[[json {"by": "primary"}]]'

        async def main() -> None:
            down = model_endpoints.endpoint(primary.base_url, "test")
            for _ in range(3):
                down.failed("refused")
            first = Engine(AgentPlan.from_agent(agent, make_config(extra={"structured": True})))
            first.submit("k", text, position=1, meta="m1")
            # The fallback's first answer (not JSON) is journaled; the repair call is in flight: crash now.
            assert await asyncio.to_thread(backup.wait_for_requests, 2, 10.0)
            (delta,) = first.collect()
            await first.close()
            journal = codec.decode(next(iter(json.loads(delta.state)["r"]["j"].values())))
            assert isinstance(journal, ChatResult)
            assert (journal.fallback, journal.message.content) == ("backup", "no json here")

            model_endpoints.clear()  # the primary is healthy after the restart
            metrics = RecordingMetrics()
            second = Engine(AgentPlan.from_agent(agent, make_config(extra={"structured": True})),
                            state_loader={"k": delta.state}.get, metrics=metrics)
            second.submit("k", text, position=1, meta="m1")
            await second.wait_idle()
            (done,) = second.collect()
            assert done.outputs == [("m1", {"by": "primary"})]
            assert metrics.llm_requests_by_model == {"model-a": 1}  # only the repair: the first call replayed
            (repair,) = primary.requests
            assert {"role": "assistant", "content": "no json here"} in repair["messages"]
            assert len(backup.requests) == 2

        run_async(main())
    finally:
        primary.stop()
        backup.stop()
