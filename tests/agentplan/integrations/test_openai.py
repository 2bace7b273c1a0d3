"""OpenAIChatModelConnection / Setup against the stub through the real openai client:
request shape, tool calls, usage, failure classification, environment fallbacks."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from agentplan import (
    ChatMessage,
    ChatModelError,
    MessageRole,
    OpenAIChatModelConnection,
    OpenAIChatModelSetup,
    ResourceError,
    ToolCall,
    TransientError,
)
from agentplan.chat_models import ChatResult
from agentplan.integrations.openai import parse_chat_completion, to_openai_message
from agentplan.testing.llm_stub import StubLLMServer
from tests.agentplan.support import run_async


@pytest.fixture(params=["lean", "aiohttp", "httpx"])
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test over both HTTP stacks the connection can use."""
    monkeypatch.setenv("AGENTPLAN_HTTP_CLIENT", request.param)
    return str(request.param)


def connection(stub: StubLLMServer, **kwargs: Any) -> OpenAIChatModelConnection:
    return OpenAIChatModelConnection(api_base_url=stub.base_url, api_key="test", max_retries=0,
                                     **{"timeout": 5.0, **kwargs})


def chat(conn: OpenAIChatModelConnection, content: str, model: str = "m", **kwargs: Any) -> Any:
    async def call() -> Any:
        try:
            return await conn.chat([ChatMessage(role=MessageRole.USER, content=content)], model=model, **kwargs)
        finally:
            await conn.aclose()

    return run_async(call())


def test_plain_answer_and_usage(stub_llm: StubLLMServer, transport: str) -> None:
    result = chat(connection(stub_llm), "hello there", temperature=0.2)
    assert result.message.role is MessageRole.ASSISTANT
    assert result.message.content == "echo: hello there"
    assert result.message.tool_calls == []
    assert result.model == "m"
    assert result.prompt_tokens == len("hello there") // 4 + 1
    assert result.completion_tokens == len("echo: hello there") // 4 + 1
    (request,) = stub_llm.requests
    assert request["messages"] == [{"role": "user", "content": "hello there"}]


def test_tool_calls_are_parsed(stub_llm: StubLLMServer) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    result = chat(connection(stub_llm), '[[tool:f {"x": [1, 2]}]] [[tool:g]]', tools=tools)
    assert result.message.content == ""
    assert [(c.name, c.arguments) for c in result.message.tool_calls] == [("f", {"x": [1, 2]}), ("g", {})]
    assert stub_llm.requests[0]["tools"] == tools


def test_a_parsed_answer_equals_the_validated_result() -> None:
    """parse_chat_completion builds its result without pydantic validation: it must be the same object
    validation would build, down to the fields it reports as set."""
    answer = {"model": "served", "choices": [{"message": {"content": "hi", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]},
        "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}
    parsed = parse_chat_completion(json.dumps(answer).encode(), "requested")
    validated = ChatResult(message=ChatMessage(role=MessageRole.ASSISTANT, content="hi",
                                               tool_calls=[ToolCall(id="c1", name="f", arguments={"a": 1})]),
                           model="served", prompt_tokens=7, completion_tokens=3, finish_reason="tool_calls")
    assert parsed == validated
    assert parsed.model_dump(exclude_unset=True) == validated.model_dump(exclude_unset=True)
    assert ChatResult.model_validate_json(parsed.model_dump_json()) == parsed
    without_model = {**answer, "model": None}
    assert parse_chat_completion(json.dumps(without_model).encode(), "requested").model == "requested"


def test_a_model_name_that_is_not_a_string_is_named_in_the_error() -> None:
    answer = {"model": 5, "choices": [{"message": {"content": "hi"}}]}
    with pytest.raises(ChatModelError, match="'model' is not a string"):
        parse_chat_completion(json.dumps(answer).encode(), "requested")


def test_messages_are_converted_to_the_openai_shape() -> None:
    call = ToolCall(id="c1", name="f", arguments={"a": 1})
    assistant = to_openai_message(ChatMessage(role=MessageRole.ASSISTANT, tool_calls=[call]))
    assert assistant == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]}
    tool_msg = to_openai_message(ChatMessage(role=MessageRole.TOOL, content="42", extra_args={"tool_call_id": "c1"}))
    assert tool_msg == {"role": "tool", "content": "42", "tool_call_id": "c1"}
    assert to_openai_message(ChatMessage(role=MessageRole.SYSTEM, content="s")) == {"role": "system", "content": "s"}


@pytest.mark.parametrize(
    "fault, kind",
    [("429", "rate_limit"), ("500", "http_500"), ("503", "http_503"), ("disconnect", "connection")],
)
def test_retryable_failures_are_transient(stub_llm: StubLLMServer, transport: str, fault: str, kind: str) -> None:
    stub_llm.retry_after_s = 1.5
    stub_llm.fail_next(1, fault)
    with pytest.raises(TransientError) as info:
        chat(connection(stub_llm), "hi")
    assert info.value.kind == kind
    if fault == "429":
        assert info.value.retry_after_s == 1.5
    assert chat(connection(stub_llm), "hi").message.content == "echo: hi"  # recovered


def test_timeout_is_transient(stub_llm: StubLLMServer, transport: str) -> None:
    stub_llm.fail_next(1, "timeout")
    with pytest.raises(TransientError) as info:
        chat(connection(stub_llm, timeout=0.2), "hi")
    assert info.value.kind == "timeout"


def test_refused_connection_is_transient(transport: str) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conn = OpenAIChatModelConnection(api_base_url=f"http://127.0.0.1:{port}/v1", api_key="k", timeout=2.0)
    with pytest.raises(TransientError) as info:
        chat(conn, "hi")
    assert info.value.kind == "connection"


def test_client_errors_are_not_retryable(stub_llm: StubLLMServer, transport: str) -> None:
    conn = OpenAIChatModelConnection(api_base_url=f"http://127.0.0.1:{stub_llm.port}/nowhere/v1", api_key="k")
    with pytest.raises(ChatModelError, match="404") as info:
        chat(conn, "hi")
    assert not isinstance(info.value, TransientError)


def test_environment_fallbacks_and_missing_key(stub_llm: StubLLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", stub_llm.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    monkeypatch.setenv("OPENAI_MODEL", "env-model")
    conn = OpenAIChatModelConnection()
    assert conn.api_base_url == stub_llm.base_url and conn.api_key == "from-env"
    assert "from-env" not in repr(conn)
    result = chat(conn, "x", model="")
    assert result.model == "env-model"
    setup = OpenAIChatModelSetup(connection=conn, temperature=None, max_tokens=5)
    assert setup.model == "env-model"
    assert setup.params == {"max_tokens": 5}

    monkeypatch.delenv("OPENAI_API_KEY")
    keyless = OpenAIChatModelConnection(api_base_url=stub_llm.base_url)
    with pytest.raises(ResourceError, match="no API key"):
        chat(keyless, "x")


def test_a_connection_serves_successive_event_loops(stub_llm: StubLLMServer) -> None:
    conn = connection(stub_llm)
    clients: list[Any] = []

    async def call(close: bool) -> str:
        client = conn.client()
        assert conn.client() is client  # one client per loop
        clients.append(client)
        answer = (await conn.chat([ChatMessage(content="x")], model="m")).message.content
        if close:
            await conn.aclose()
        else:
            await client.close()  # behind the connection's back: it still holds this client
        return answer

    assert run_async(call(close=False)) == "echo: x"
    assert run_async(call(close=True)) == "echo: x"  # reusing the first loop's client would fail here
    assert clients[0] is not clients[1]


def test_setup_with_object_references(stub_llm: StubLLMServer) -> None:
    setup = OpenAIChatModelSetup(connection=connection(stub_llm), model="m", extract_reasoning=True,
                                 additional_kwargs={"seed": 1})
    assert setup.params == {"seed": 1}

    async def call() -> Any:
        try:
            return await setup.chat([ChatMessage(content="<x>")])
        finally:
            await setup.connection.aclose()

    result = run_async(call())
    assert result.message.content == "echo: <x>"
    assert json.loads(json.dumps(result.model_dump(mode="json")))["message"]["content"] == "echo: <x>"


def test_aclose_closes_the_client_of_the_running_loop(stub_llm: StubLLMServer) -> None:
    conn = connection(stub_llm)

    async def main() -> None:
        await conn.aclose()  # nothing to close yet
        await conn.chat([ChatMessage(content="x")], model="m")
        client = conn.client()
        await conn.aclose()
        assert client.is_closed()
        assert conn.client() is not client  # a later call gets a fresh client
        assert (await conn.chat([ChatMessage(content="y")], model="m")).message.content == "echo: y"
        await conn.aclose()

    run_async(main())


def test_proxy_variables_are_honoured(stub_llm: StubLLMServer, transport: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY routes the call (to a proxy nobody listens on: refused); NO_PROXY exempts the host."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_proxy = f"http://127.0.0.1:{sock.getsockname()[1]}"
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", dead_proxy)
    with pytest.raises(TransientError) as info:
        chat(connection(stub_llm), "via the proxy")
    assert info.value.kind in ("connection", "timeout")
    assert stub_llm.requests == []  # nothing reached the model directly

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert chat(connection(stub_llm), "direct").message.content == "echo: direct"


def test_an_unknown_http_client_is_refused_naming_the_setting(stub_llm: StubLLMServer,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTPLAN_HTTP_CLIENT", "h3")
    with pytest.raises(ResourceError, match="AGENTPLAN_HTTP_CLIENT=.h3.: expected one of lean, aiohttp, httpx"):
        chat(connection(stub_llm), "x")
