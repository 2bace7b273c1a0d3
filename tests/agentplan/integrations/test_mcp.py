"""MCP servers as resources, against the SDK's own server (streamable HTTP in a subprocess, and stdio):
tools and prompts register under their own names, a chat model (the LLM stub over HTTP) calls the
MCP tool, and a server restart costs a retry, not a run."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest

from agentplan import (
    AgentPlan,
    AgentsExecutionEnvironment,
    Engine,
    PlanCompileError,
    Prompt,
    ResourceDescriptor,
    ResourceError,
    ResourceType,
    TransientError,
)
from agentplan.integrations.mcp import MCPServer, MCPTool, MCPToolError, http_auth
from agentplan.metrics import RecordingMetrics
from agentplan.testing.llm_stub import StubLLMServer
from examples.mcp_agent.calculator_server import ServerProcess, running_server
from examples.mcp_agent.mcp_agent import CalculatorAgent
from tests.agentplan.support import make_config
from worker.kafka.embedded import free_port

REPO = Path(__file__).resolve().parents[3]
QUESTION = {"id": "q1", "a": 17, "b": 25, "question": 'What is 17 plus 25? [[tool:add {"a": 17, "b": 25}]]'}


def server_calls(log: Path) -> list[dict[str, int]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def calls(log: Path) -> list[dict[str, int]]:
    """The arguments of every call the server received."""
    return [{"a": c["a"], "b": c["b"]} for c in server_calls(log)]


@pytest.fixture()
def calculator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerProcess]:
    with running_server(free_port(), tmp_path / "calls.log") as server:
        monkeypatch.setenv("CALCULATOR_MCP_URL", server.endpoint)
        yield server


@pytest.fixture()
def llm(monkeypatch: pytest.MonkeyPatch) -> Iterator[StubLLMServer]:
    with StubLLMServer() as stub:
        monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        yield stub


def test_tools_and_prompts_register_under_their_own_names(calculator: ServerProcess,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    plan = AgentPlan.from_agent(CalculatorAgent())
    add = plan.get_resource("add", ResourceType.TOOL)
    assert isinstance(add, MCPTool)
    params = add.schema()["function"]["parameters"]
    assert params["required"] == ["a", "b"] and params["properties"]["a"] == {"type": "integer"}
    prompt = plan.get_resource("ask_sum", ResourceType.PROMPT)
    assert isinstance(prompt, Prompt) and prompt.placeholders() == {"a", "b"}
    assert prompt.format_messages(a=1, b=2)[0].content == "Use the add tool to add 1 and 2, then report the sum."
    # A prompt whose argument must be a number cannot become a template: left out, with a warning.
    assert "add_many" not in plan.resource_providers
    assert "prompt 'add_many' is not registered" in caplog.text
    # The JSON keeps the server, not what it offered; loading asks the server again.
    data = json.loads(plan.model_dump_json())
    assert {r["name"] for r in data["resources"]} == {"calculator", "llm", "math_model"}
    loaded = AgentPlan.model_validate_json(plan.model_dump_json())
    assert isinstance(loaded.get_resource("add", ResourceType.TOOL), MCPTool)


def test_agent_calls_the_mcp_tool_through_the_stub(calculator: ServerProcess, llm: StubLLMServer) -> None:
    env = AgentsExecutionEnvironment.get_execution_environment()
    outputs = env.from_list([{"key": "q1", "value": QUESTION}]).apply(CalculatorAgent()).to_list()
    env.execute()
    assert outputs == [{"q1": {"id": "q1", "answer": '{"result": 42}'}}]
    assert calls(calculator.call_log) == [{"a": 17, "b": 25}]
    first = llm.requests[0]
    assert [t["function"]["name"] for t in first["tools"]] == ["add"]
    assert first["messages"][0]["content"] == "Use the add tool to add 17 and 25, then report the sum."


def test_many_keys_call_the_tool_at_once(calculator: ServerProcess, llm: StubLLMServer) -> None:
    questions = [{"id": f"q{i}", "a": i, "b": 1000, "question": f'[[tool:add {{"a": {i}, "b": 1000}}]]'}
                 for i in range(20)]
    env = AgentsExecutionEnvironment.get_execution_environment()
    outputs = env.from_list([{"key": q["id"], "value": q} for q in questions]).apply(CalculatorAgent()).to_list()
    env.execute()
    answers = {k: json.loads(v["answer"])["result"] for entry in outputs for k, v in entry.items()}
    assert answers == {f"q{i}": i + 1000 for i in range(20)}
    assert sorted(c["a"] for c in calls(calculator.call_log)) == list(range(20))


def test_session_reconnects_after_a_server_restart(calculator: ServerProcess) -> None:
    async def scenario() -> None:
        server = MCPServer(calculator.endpoint, timeout=5)
        assert await server.call_tool("add", {"a": 1, "b": 2}) == {"result": 3}
        calculator.stop()
        with pytest.raises(TransientError):
            await server.call_tool("add", {"a": 2, "b": 2})
        await asyncio.to_thread(calculator.start)
        assert await server.call_tool("add", {"a": 3, "b": 2}) == {"result": 5}
        with pytest.raises(MCPToolError, match="Unknown tool"):  # the model is told; not transient
            await server.call_tool("no_such_tool", {})
        await server.aclose()

    asyncio.run(scenario())
    assert calls(calculator.call_log) == [{"a": 1, "b": 2}, {"a": 3, "b": 2}]


def test_a_run_waits_out_a_server_restart(calculator: ServerProcess, llm: StubLLMServer) -> None:
    """One loop, one session: the first run opens it, the server restarts, the second run's call
    fails transiently, the engine retries, and the call succeeds on a new session."""
    plan = AgentPlan.from_agent(CalculatorAgent(), make_config(retry_backoff_s=0.05, retry_backoff_max_s=0.2))
    metrics = RecordingMetrics()

    async def scenario() -> list[object]:
        engine = Engine(plan, metrics=metrics)
        engine.submit("q1", QUESTION)
        await engine.wait_idle()
        calculator.stop()
        engine.submit("q2", {**QUESTION, "id": "q2"})
        for _ in range(200):  # bounded: the tool call retries every 0.2 s at most
            if metrics.transient_retries:
                break
            await asyncio.sleep(0.05)
        assert metrics.transient_retries.get("mcp", 0) >= 1
        await asyncio.to_thread(calculator.start)
        await asyncio.wait_for(engine.wait_idle(), 30)
        await plan.aclose()
        return [out for delta in engine.collect() for _meta, out in delta.outputs]

    outputs = asyncio.run(scenario())
    assert sorted(o["id"] for o in outputs) == ["q1", "q2"]  # type: ignore[index]
    assert all(o["answer"] == '{"result": 42}' for o in outputs)  # type: ignore[index]
    assert len(calls(calculator.call_log)) == 2  # the failed attempt reached no server


class StdioCalculatorAgent(CalculatorAgent):
    """The example agent without its HTTP server: the environment supplies a stdio one of that name."""

    calculator = None  # type: ignore[assignment]


def test_stdio_server(tmp_path: Path, llm: StubLLMServer) -> None:
    log = tmp_path / "stdio-calls.log"
    env = AgentsExecutionEnvironment.get_execution_environment()
    env.add_resource("calculator", ResourceType.MCP_SERVER, ResourceDescriptor(
        clazz=MCPServer, command=[sys.executable, "-m", "examples.mcp_agent.calculator_server", "--stdio",
                                  "--call-log", str(log)],
        env={"PYTHONPATH": str(REPO)}, cwd=str(REPO)))
    outputs = env.from_list([{"key": "q1", "value": QUESTION}]).apply(StdioCalculatorAgent()).to_list()
    env.execute()
    assert outputs == [{"q1": {"id": "q1", "answer": '{"result": 42}'}}]
    assert calls(log) == [{"a": 17, "b": 25}]


def test_stdio_server_is_started_again_after_it_dies(tmp_path: Path) -> None:
    log = tmp_path / "stdio-calls.log"
    server = MCPServer(command=[sys.executable, "-m", "examples.mcp_agent.calculator_server", "--stdio",
                                "--call-log", str(log)], env={"PYTHONPATH": str(REPO)}, cwd=str(REPO), timeout=10)

    async def scenario() -> None:
        assert await server.call_tool("add", {"a": 1, "b": 1}) == {"result": 2}
        first_pid = server_calls(log)[0]["pid"]
        os.kill(first_pid, signal.SIGKILL)  # the server process this session started
        for _ in range(50):  # bounded: the session notices the closed pipe and ends
            try:
                assert await server.call_tool("add", {"a": 2, "b": 2}) == {"result": 4}
                break
            except TransientError:
                await asyncio.sleep(0.1)
        await server.aclose()

    asyncio.run(scenario())
    pids = [c["pid"] for c in server_calls(log)]
    assert len(pids) == 2 and pids[0] != pids[1]


def test_bad_server_settings_fail_at_start_up() -> None:
    with pytest.raises(ResourceError, match="http"):
        MCPServer("ftp://127.0.0.1/mcp")
    with pytest.raises(ResourceError, match="exactly one"):
        MCPServer()
    unreachable = ResourceDescriptor(clazz=MCPServer, endpoint=f"http://127.0.0.1:{free_port()}/mcp", timeout=2)
    with pytest.raises(PlanCompileError, match="mcp_server 'calculator' .* cannot list"):
        AgentPlan.from_agent(StdioCalculatorAgent(), resources={"calculator": (ResourceType.MCP_SERVER, unreachable)})


class BearerAuth(httpx.Auth):
    """A user's httpx auth flow, as Flink Agents code passes it (``MCPServer(auth=...)``)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.requests: list[str] = []

    def auth_flow(self, request: Any) -> Iterator[Any]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        self.requests.append(request.method)
        yield request


def test_upstream_auth_argument_authenticates_every_request(calculator: ServerProcess) -> None:
    auth = BearerAuth("secret")
    tools, prompts = MCPServer(calculator.endpoint, auth=auth).discover()
    assert [t.name for t in tools] == ["add"] and "ask_sum" in prompts
    assert auth.requests and set(auth.requests) <= {"POST", "GET", "DELETE"}  # through the user's flow
    assert isinstance(http_auth(("user", "password")), httpx2.BasicAuth)
    with pytest.raises(ResourceError, match="MCPServer auth must be an httpx.Auth"):
        MCPServer(calculator.endpoint, auth="secret")
    with pytest.raises(ResourceError, match="not to a stdio command"):
        MCPServer(command=["true"], auth=auth)
