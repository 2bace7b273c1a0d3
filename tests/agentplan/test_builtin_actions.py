"""The built-in chat and tool actions against the stub LLM over HTTP: prompt formatting, the
tool-call loop, structured output, transient failures, token usage, reasoning extraction."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from pydantic import BaseModel

from agentplan import (
    Agent,
    AgentPlan,
    AgentRunError,
    ChatMessage,
    ChatModelError,
    ChatRequestEvent,
    ChatResponseEvent,
    Engine,
    InputEvent,
    LocalExecutionEnvironment,
    MessageRole,
    OpenAIChatModelSetup,
    OutputEvent,
    Prompt,
    ResourceDescriptor,
    ResourceError,
    ResourceType,
    RunnerContext,
    ToolCallLimitExceeded,
    tool,
)
from agentplan.metrics import RecordingMetrics
from agentplan.plan.actions import parse_structured
from agentplan.testing.llm_stub import MALFORMED_CONTENT, StubLLMServer
from tests.agentplan.conftest import EnvFactory
from tests.agentplan.support import CONNECTION, make_config, run_async, stub_connection

PRICES = {"KB-1": 49.5, "MS-2": 19.0}


class Verdict(BaseModel):
    label: str
    score: float


def ask(event: InputEvent, ctx: RunnerContext) -> None:
    data: dict[str, Any] = event.input
    request = ChatRequestEvent(
        model=data.get("model", "model"),
        messages=[ChatMessage(role=MessageRole.USER, content=data.get("content", ""), extra_args=data.get("args", {}))],
        output_schema=ctx.get_action_config_value("output_schema"))
    ctx.send_event(request)
    ctx.sensory_memory.set("request_id", request.id)


def answer(event: ChatResponseEvent, ctx: RunnerContext) -> None:
    ctx.send_event(OutputEvent(output={
        "content": event.response.content,
        "structured": event.structured_output,
        "reasoning": event.response.extra_args.get("reasoning"),
        "request_matches": event.request_id == ctx.sensory_memory.get("request_id"),
    }))


class ChatAgent(Agent):
    """Sends ``input["content"]`` (``input["args"]`` as extra_args) to setup ``input.get("model", "model")``."""

    def __init__(self, output_schema: Any = None, **setups: dict[str, Any]) -> None:
        super().__init__()
        for name, args in (setups or {"model": {}}).items():
            args = dict(args)
            model_name = args.pop("model_name", "stub-model")
            self.add_resource(name, ResourceDescriptor(clazz=OpenAIChatModelSetup, connection=CONNECTION,
                                                       model=model_name, **args))
        self.add_action("ask", [InputEvent], ask, output_schema=output_schema)
        self.add_action("answer", [ChatResponseEvent], answer)


class ToolAgent(ChatAgent):
    @tool
    @staticmethod
    def lookup_price(sku: str) -> dict[str, Any]:
        """Price of a product.

        Args:
            sku: The product id.
        """
        return {"sku": sku, "price": PRICES[sku]}

    @tool
    @staticmethod
    async def broken_tool(reason: str) -> str:
        """Always fails.

        Args:
            reason: What to complain about.
        """
        raise RuntimeError(f"tool exploded: {reason}")

    @tool
    @staticmethod
    def ping() -> str:
        """Answers pong."""
        return "pong"


def run(env: LocalExecutionEnvironment, agent: Agent, *inputs: dict[str, Any]) -> list[Any]:
    output = env.from_list([{"key": i, "value": value} for i, value in enumerate(inputs)]).apply(agent).to_list()
    env.execute()
    return [value for entry in output for value in entry.values()]


def ok_requests(stub: StubLLMServer) -> list[dict[str, Any]]:
    return [r for r in stub.requests if r["status"] == 200]


TOOLS = ["lookup_price", "broken_tool", "ping"]


# -- prompts --------------------------------------------------------------------------------------


def test_prompt_is_formatted_from_extra_args(stub_llm: StubLLMServer, make_env: EnvFactory) -> None:
    prompt = Prompt.from_messages([
        ChatMessage(role=MessageRole.SYSTEM, content='Reply like {"k": 1} about {topic}.'),
        ChatMessage(role=MessageRole.USER, content="Question: {question}"),
    ])
    env = make_env()
    env.add_resource("qa_prompt", prompt)
    agent = ChatAgent(model={"prompt": "qa_prompt"})
    (result,) = run(env, agent, {"args": {"topic": "cats", "question": "why purr?"}})
    assert result["content"] == "echo: Question: why purr?"
    assert result["request_matches"] is True
    (request,) = stub_llm.requests
    assert request["model"] == "stub-model"
    assert request["messages"] == [
        {"role": "system", "content": 'Reply like {"k": 1} about cats.'},
        {"role": "user", "content": "Question: why purr?"},
    ]
    assert request["tools"] is None


def test_request_content_follows_the_prompt(stub_llm: StubLLMServer, make_env: EnvFactory) -> None:
    env = make_env()
    agent = ChatAgent(model={"prompt": Prompt.from_text("Context: {ctx}")})
    (result,) = run(env, agent, {"content": "and now?", "args": {"ctx": "sunny"}})
    assert [m["content"] for m in stub_llm.requests[0]["messages"]] == ["Context: sunny", "and now?"]
    assert result["content"] == "echo: and now?"


def test_unknown_chat_model_fails_the_run(make_env: EnvFactory) -> None:
    with pytest.raises(AgentRunError) as info:
        run(make_env(), ChatAgent(), {"model": "nope", "content": "hi"})
    assert isinstance(info.value.cause, ResourceError)


# -- tool calls -----------------------------------------------------------------------------------


def test_tool_call_loop_with_a_real_tool(stub_llm: StubLLMServer, make_env: EnvFactory) -> None:
    env = make_env()
    (result,) = run(env, ToolAgent(model={"tools": TOOLS}), {"content": 'Price? [[tool:lookup_price {"sku": "KB-1"}]]'})
    assert json.loads(result["content"]) == {"sku": "KB-1", "price": 49.5}
    first, second = stub_llm.requests
    declared = {t["function"]["name"]: t["function"] for t in first["tools"]}
    assert set(declared) == set(TOOLS)
    assert declared["lookup_price"]["description"] == "Price of a product."
    assert declared["lookup_price"]["parameters"]["properties"]["sku"] == {"type": "string",
                                                                          "description": "The product id."}
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "tool"]
    call = second["messages"][1]["tool_calls"][0]
    assert call["function"]["name"] == "lookup_price"
    assert json.loads(call["function"]["arguments"]) == {"sku": "KB-1"}
    assert second["messages"][2]["tool_call_id"] == call["id"]
    assert json.loads(second["messages"][2]["content"]) == {"sku": "KB-1", "price": 49.5}
    assert env.metrics.actions == {"ask": 1, "chat_model_action": 2, "tool_call_action": 1, "answer": 1}


def test_several_tool_calls_in_one_reply(stub_llm: StubLLMServer, make_env: EnvFactory) -> None:
    content = '[[tool:lookup_price {"sku": "KB-1"}]] and [[tool:lookup_price {"sku": "MS-2"}]]'
    (result,) = run(make_env(), ToolAgent(model={"tools": TOOLS}), {"content": content})
    tool_messages = [m for m in stub_llm.requests[1]["messages"] if m["role"] == "tool"]
    assert [json.loads(m["content"])["price"] for m in tool_messages] == [49.5, 19.0]
    assert json.loads(result["content"]) == {"sku": "MS-2", "price": 19.0}  # the stub echoes the last one


@pytest.mark.parametrize(
    "directive, error",
    [('[[tool:broken_tool {"reason": "disk"}]]', "error: RuntimeError: tool exploded: disk"),
     ('[[tool:lookup_price {"sku": "KB-1", "colour": "red"}]]', "error: ValueError: invalid arguments"),
     ("[[tool:no_such_tool]]", "error: unknown tool 'no_such_tool'")],
    ids=["raises", "bad-arguments", "unknown"],
)
def test_a_failing_tool_becomes_an_error_result(stub_llm: StubLLMServer, make_env: EnvFactory,
                                                directive: str, error: str) -> None:
    env = make_env()
    (result,) = run(env, ToolAgent(model={"tools": TOOLS}), {"content": directive})
    assert json.loads(result["content"])["result"].startswith(error)  # the run completed
    assert stub_llm.requests[1]["messages"][-1]["content"].startswith(error)
    assert env.dead_letters == []


def test_a_model_that_never_stops_calling_tools(stub_llm: StubLLMServer, make_env: EnvFactory) -> None:
    env = make_env(max_tool_call_rounds=2)
    with pytest.raises(AgentRunError) as info:
        run(env, ToolAgent(model={"tools": TOOLS}), {"content": "[[tool-loop:ping]]"})
    assert isinstance(info.value.cause, ToolCallLimitExceeded)
    assert "max_tool_call_rounds=2" in str(info.value.cause)
    assert stub_llm.request_count == 3  # the first call and one per allowed round
    assert env.metrics.actions["tool_call_action"] == 2


# -- structured output ------------------------------------------------------------------------------


def test_malformed_structured_output_is_repaired(stub_llm: StubLLMServer, make_env: EnvFactory) -> None:
    stub_llm.fail_next(1, "malformed_json")
    (result,) = run(make_env(), ChatAgent(output_schema=Verdict),
                    {"content": 'Judge. [[json {"label": "fine", "score": 0.75}]]'})
    assert result["structured"] == Verdict(label="fine", score=0.75)
    first, second = stub_llm.requests
    assert first["fault"] == "malformed_json"
    instruction = first["messages"][0]  # first place: many chat templates reject a later system message
    assert instruction["role"] == "system" and '"label"' in instruction["content"]
    assert [m["role"] for m in first["messages"]].count("system") == 1
    assert second["messages"][-2] == {"role": "assistant", "content": MALFORMED_CONTENT}
    assert second["messages"][-1]["role"] == "user"
    assert "not valid for the schema" in second["messages"][-1]["content"]


def test_persistently_malformed_output_fails(stub_llm: StubLLMServer, make_env: EnvFactory) -> None:
    stub_llm.fail_next(5, "malformed_json")
    with pytest.raises(AgentRunError) as info:
        run(make_env(structured_output_retries=1), ChatAgent(output_schema=Verdict),
            {"content": '[[json {"label": "fine", "score": 0.75}]]'})
    assert type(info.value.cause) is ChatModelError
    assert "does not match the output schema" in str(info.value.cause)
    assert stub_llm.request_count == 2


def test_output_violating_the_schema_fails(stub_llm: StubLLMServer, make_env: EnvFactory) -> None:
    with pytest.raises(AgentRunError) as info:
        run(make_env(structured_output_retries=2), ChatAgent(output_schema=Verdict),
            {"content": '[[json {"label": "fine"}]]'})
    assert "score" in str(info.value.cause)
    assert stub_llm.request_count == 3


def test_json_schema_dict_output(make_env: EnvFactory) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    (result,) = run(make_env(), ChatAgent(output_schema=schema), {"content": '[[json {"n": 3}]]'})
    assert result["structured"] == {"n": 3}


def test_parse_structured_accepts_fences() -> None:
    assert parse_structured('```json\n{"label": "a", "score": 1}\n```', Verdict) == Verdict(label="a", score=1)
    assert parse_structured(' {"a": 1} ', {"type": "object"}) == {"a": 1}
    with pytest.raises(ValueError):
        parse_structured("[1, 2]", {"type": "object"})


# -- transient failures ---------------------------------------------------------------------------------


def test_rate_limits_are_retried_after_retry_after(stub_llm: StubLLMServer, make_env: EnvFactory) -> None:
    stub_llm.retry_after_s = 0.1
    stub_llm.fail_next(2, "429")
    env = make_env(retry_backoff_s=0.0001)
    started = time.monotonic()
    (result,) = run(env, ChatAgent(), {"content": "hi"})
    elapsed = time.monotonic() - started
    assert result["content"] == "echo: hi"
    assert [r["status"] for r in stub_llm.requests] == [429, 429, 200]
    assert elapsed >= 2 * 0.1  # the server's Retry-After, not the tiny configured backoff
    assert env.metrics.transient_retries == {"rate_limit": 2}
    assert env.metrics.llm_requests == 3 and env.metrics.llm_errors == 2
    assert env.dead_letters == []


def test_server_errors_are_retried(stub_llm: StubLLMServer, make_env: EnvFactory) -> None:
    stub_llm.fail_next(2, "503")
    env = make_env()
    (result,) = run(env, ChatAgent(), {"content": "hi"})
    assert result["content"] == "echo: hi"
    assert [r["status"] for r in stub_llm.requests] == [503, 503, 200]
    assert env.metrics.transient_retries == {"http_503": 2}


def test_transient_failures_outlasting_max_retries_still_recover(stub_llm: StubLLMServer,
                                                                 make_env: EnvFactory) -> None:
    stub_llm.fail_next(5, "500")
    env = make_env(max_retries=1)
    (result,) = run(env, ChatAgent(), {"content": "hi"})
    assert result["content"] == "echo: hi"
    assert [r["status"] for r in stub_llm.requests] == [500] * 5 + [200]
    assert env.dead_letters == []


class SignallingMetrics(RecordingMetrics):
    """Sets ``event`` on the first transient retry of ``kind`` (called on the engine's loop)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.event: asyncio.Event | None = None

    def transient_retry(self, kind: str) -> None:
        super().transient_retry(kind)
        if kind == self.kind and self.event is not None:
            self.event.set()


def test_connection_refused_then_accepted(stub_llm: StubLLMServer, make_env: EnvFactory) -> None:
    metrics = SignallingMetrics("connection")
    env = make_env(timeout=5.0)
    env.metrics = metrics
    output = env.from_list([{"key": "k", "value": {"content": "are you back?"}}]).apply(ChatAgent()).to_list()

    async def main() -> None:
        metrics.event = asyncio.Event()
        stub_llm.refuse_connections()
        run_task = asyncio.create_task(env.execute_async())
        await metrics.event.wait()  # the agent has hit the outage and is retrying
        assert not run_task.done()
        await asyncio.to_thread(stub_llm.accept_connections)
        await run_task

    run_async(main())
    assert output == [{"k": {"content": "echo: are you back?", "structured": None, "reasoning": None,
                             "request_matches": True}}]
    assert metrics.transient_retries["connection"] >= 1
    assert [r["status"] for r in stub_llm.requests] == [200]  # refused attempts never reached the server


def test_request_timeout_is_transient(stub_llm: StubLLMServer, make_env: EnvFactory) -> None:
    stub_llm.fail_next(1, "timeout")
    env = make_env(timeout=0.3)
    (result,) = run(env, ChatAgent(), {"content": "slow?"})
    assert result["content"] == "echo: slow?"
    assert env.metrics.transient_retries == {"timeout": 1}


# -- metrics and reasoning --------------------------------------------------------------------------------


def test_token_usage_is_recorded(stub_llm: StubLLMServer, make_env: EnvFactory) -> None:
    env = make_env()
    results = run(env, ChatAgent(), {"content": "count my tokens please"}, {"content": "and mine"})
    expected_prompt = sum(sum(len(m["content"]) for m in r["messages"]) // 4 + 1 for r in stub_llm.requests)
    expected_completion = sum(len(r["content"]) // 4 + 1 for r in results)
    assert env.metrics.llm_requests == 2
    assert env.metrics.prompt_tokens == expected_prompt > 0
    assert env.metrics.completion_tokens == expected_completion > 0
    assert env.metrics.runs == 2


def test_extract_reasoning_strips_think(make_env: EnvFactory) -> None:
    agent = ChatAgent(on={"model_name": "stub-reasoning", "extract_reasoning": True},
                      off={"model_name": "stub-reasoning"})
    content = "Classify the sentiment. Input text: I love it"
    on, off = run(make_env(), agent, {"model": "on", "content": content}, {"model": "off", "content": content})
    assert json.loads(on["content"])["sentiment"] == "positive"
    assert on["reasoning"] == "stub reasoning"
    assert off["content"].startswith("<think>stub reasoning</think>")
    assert off["reasoning"] is None


# -- checkpoints inside the tool loop ---------------------------------------------------------------------


class Price(BaseModel):
    sku: str
    price: float


class Gate:
    calls = 0
    entered: asyncio.Event
    release: asyncio.Event


class SlowToolAgent(ChatAgent):
    @tool
    @staticmethod
    async def slow_lookup(sku: str) -> dict[str, Any]:
        """Price of a product, slowly.

        Args:
            sku: The product id.
        """
        Gate.calls += 1
        Gate.entered.set()
        await Gate.release.wait()
        return {"sku": sku, "price": PRICES[sku]}

    @tool
    @staticmethod
    def today() -> Any:
        """A value that is not JSON: sent to the model as text."""
        import datetime

        return datetime.date(2024, 1, 2)


def test_a_restart_mid_tool_call_does_not_repeat_the_model_call(stub_llm: StubLLMServer) -> None:
    plan = AgentPlan.from_agent(SlowToolAgent(output_schema=Price, model={"tools": ["slow_lookup"]}), make_config(),
                                {CONNECTION: (ResourceType.CHAT_MODEL_CONNECTION, stub_connection(stub_llm))})
    value = {"content": '[[tool:slow_lookup {"sku": "KB-1"}]]'}

    async def main() -> Any:
        Gate.calls = 0
        Gate.entered, Gate.release = asyncio.Event(), asyncio.Event()
        first = Engine(plan)
        first.submit("k", value, position=0)
        await Gate.entered.wait()  # the model asked for the tool; the tool is running
        blob = first.collect()[0].state
        await first.close()
        assert stub_llm.request_count == 1

        Gate.release.set()
        second = Engine(plan, state_loader={"k": blob}.get)
        second.submit("k", value, position=0, meta="resumed")
        await second.wait_idle()
        await plan.aclose()
        return second.collect()[0]

    delta = run_async(main())
    ((meta, result),) = delta.outputs
    assert meta == "resumed"
    assert result["structured"] == Price(sku="KB-1", price=49.5)
    assert result["request_matches"] is True  # sensory memory and event ids survived the restart
    assert stub_llm.request_count == 2  # the first model call was not repeated
    assert Gate.calls == 2  # the unfinished tool call was


def test_a_non_json_tool_result_reaches_the_model_as_text(stub_llm: StubLLMServer, make_env: EnvFactory) -> None:
    (result,) = run(make_env(), SlowToolAgent(model={"tools": ["today"]}), {"content": "[[tool:today]]"})
    assert stub_llm.requests[1]["messages"][-1]["content"] == "2024-01-02"
    assert json.loads(result["content"]) == {"result": "2024-01-02"}
