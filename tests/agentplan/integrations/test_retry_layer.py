"""The one retry layer of a model call, through the real openai client against the stub on 127.0.0.1:
exactly max_retries + 1 requests, Retry-After honoured, one WARNING naming the URL and its setting,
the endpoint's health, and waits that shutdown can cancel."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

import pytest

from agentplan import (
    Agent,
    AgentConfiguration,
    AgentRunError,
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
    ResourceType,
    RunnerContext,
)
from agentplan.endpoints import model_endpoints
from agentplan.testing.llm_stub import StubLLMServer
from tests.agentplan.support import make_config, run_async

SECRET = "sk-test-secret-4242"


def ask(event: InputEvent, ctx: RunnerContext) -> None:
    ctx.send_event(ChatRequestEvent(model="model", messages=[ChatMessage(role=MessageRole.USER, content=event.input)]))


def answer(event: ChatResponseEvent, ctx: RunnerContext) -> None:
    ctx.send_event(OutputEvent(output=event.response.content))


class AskAgent(Agent):
    def __init__(self) -> None:
        super().__init__()
        self.add_resource("model", ResourceDescriptor(clazz=OpenAIChatModelSetup, connection="llm", model="m"))
        self.add_action("ask", [InputEvent], ask)
        self.add_action("answer", [ChatResponseEvent], answer)


def environment(config: AgentConfiguration, **connection: Any) -> LocalExecutionEnvironment:
    env = LocalExecutionEnvironment(config=config)
    env.add_resource("llm", ResourceType.CHAT_MODEL_CONNECTION,
                     ResourceDescriptor(clazz=OpenAIChatModelConnection, api_key=SECRET, timeout=5.0, **connection))
    return env


@pytest.fixture(autouse=True)
def fresh_endpoints() -> Any:
    model_endpoints.clear()
    yield
    model_endpoints.clear()


def refused_port() -> int:
    """A port on 127.0.0.1 with no listener (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("limit", [0, 2])
def test_attempts_are_exactly_the_retry_limit_plus_one(stub_llm: StubLLMServer, limit: int) -> None:
    stub_llm.fail_next(10, "503")
    # max_retries=5 is the strategy's (non-transient errors) and the connection's is Flink Agents'
    # SDK setting: neither multiplies the attempts.
    env = environment(make_config(error_handling_strategy="retry", max_retries=5, retry_backoff_s=0.001,
                                  transient_retry_limit=limit),
                      api_base_url=stub_llm.base_url, max_retries=3)
    output = env.from_list([{"key": "k", "value": "hi"}]).apply(AskAgent()).to_list()
    with pytest.raises(AgentRunError, match="503"):
        env.execute()
    assert output == []
    assert [r["status"] for r in stub_llm.requests] == [503] * (limit + 1)


def test_retry_after_is_honoured(stub_llm: StubLLMServer) -> None:
    stub_llm.retry_after_s = 0.6
    stub_llm.fail_next(1, "429")
    # A backoff of 20 s: a retry ignoring Retry-After would wait at least 10 s; one not waiting at all, ~0 s.
    env = environment(make_config(retry_backoff_s=20.0, retry_backoff_max_s=60.0), api_base_url=stub_llm.base_url)
    output = env.from_list([{"key": "k", "value": "hi"}]).apply(AskAgent()).to_list()
    started = time.monotonic()
    env.execute()
    elapsed = time.monotonic() - started
    assert output == [{"k": "echo: hi"}]
    assert [r["status"] for r in stub_llm.requests] == [429, 200]
    assert 0.6 <= elapsed < 5.0


def test_unreachable_endpoint_warns_once_naming_url_and_setting(monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{refused_port()}/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    caplog.set_level(logging.DEBUG)
    env = environment(make_config(error_handling_strategy="dead-letter", retry_backoff_s=0.001,
                                  transient_retry_limit=6))
    env.from_list([{"key": "a", "value": "hi"}, {"key": "b", "value": "hi"}]).apply(AskAgent()).to_list()
    env.execute()
    assert len(env.dead_letters) == 2  # 14 refused requests
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("agentplan.endpoints")]
    (warning,) = warnings
    text = warning.getMessage()
    assert url in text and "OPENAI_BASE_URL" in text and "ConnectionRefusedError" in text
    assert SECRET not in caplog.text
    assert not [r for r in caplog.records if r.levelno == logging.INFO and "transient" in r.getMessage()]
    (status,) = model_endpoints.statuses()
    assert (status.url, status.source, status.up, status.failures) == (url, "OPENAI_BASE_URL", False, 14)


def test_the_endpoint_is_up_again_after_an_answer(stub_llm: StubLLMServer, caplog: pytest.LogCaptureFixture) -> None:
    stub_llm.fail_next(3, "503")  # three in a row take it down
    env = environment(make_config(retry_backoff_s=0.001), api_base_url=stub_llm.base_url)
    output = env.from_list([{"key": "k", "value": "hi"}]).apply(AskAgent()).to_list()
    env.execute()
    assert output == [{"k": "echo: hi"}]
    (status,) = model_endpoints.statuses()
    assert status.up and status.source == "the api_base_url argument of OpenAIChatModelConnection"
    assert status.last_error is not None and "503" in status.last_error
    messages = [r.getMessage() for r in caplog.records if r.name == "agentplan.endpoints"]
    assert len(messages) == 2 and "is failing" in messages[0] and "answers again" in messages[1]


def test_shutdown_cancels_the_backoff_of_a_model_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the worker does on SIGTERM: wait for idle up to the grace, then close the engine."""
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{refused_port()}/v1")
    env = environment(make_config(retry_backoff_s=30.0, retry_backoff_max_s=60.0))  # retries until it recovers
    plan = env.compile(AskAgent())

    async def main() -> float:
        engine = Engine(plan)
        engine.submit("k", "hi", position=1)
        while not model_endpoints.statuses() or not model_endpoints.statuses()[0].failures:
            await asyncio.sleep(0.01)  # polls a condition; the request is refused within milliseconds
        grace = 0.3
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(engine.wait_idle(), timeout=grace)
        await engine.close()
        await asyncio.wait_for(engine.wait_idle(), timeout=2.0)  # the 15-30 s backoff was cancelled
        await plan.aclose()
        return time.monotonic() - started

    assert run_async(main()) < 2.3
