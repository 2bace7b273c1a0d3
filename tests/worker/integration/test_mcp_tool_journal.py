"""An MCP tool call on the worker is a durable call: once its result is committed, a SIGKILL and a
restart resume the run after it, and the MCP server (counting its calls) never sees it again."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from agentplan.testing.llm_stub import StubLLMServer, StubReply, default_responder
from examples.mcp_agent.calculator_server import running_server
from tests.worker.integration.harness import read_all, wait_for
from worker.kafka.embedded import free_port

pytestmark = pytest.mark.integration

AGENT = "examples.mcp_agent.mcp_agent:CalculatorAgent"
QUESTION = {"id": "q1", "a": 17, "b": 25, "question": 'What is 17 plus 25? [[tool:add {"a": 17, "b": 25}]]'}


def mcp_calls(log: Path) -> list[tuple[int, int]]:
    """The (a, b) of every call the calculator server received."""
    return [(c["a"], c["b"]) for c in map(json.loads, log.read_text().splitlines())]


def committed_states(bootstrap: str, topic: str) -> list[bytes]:
    return [m.value() or b"" for m in read_all(bootstrap, topic, 1, expected=10 ** 6, timeout_s=1.0)]


def test_committed_mcp_call_is_not_repeated_after_sigkill(kafka, worker_factory, app_id, tmp_path: Path):
    # The model's answer to the tool result is held back (a 500 the engine keeps retrying) until the
    # worker is killed: the run stops between the committed tool call and its end.
    hold = threading.Event()
    hold.set()

    def responder(request: dict[str, Any]) -> StubReply:
        messages = request.get("messages") or []
        if hold.is_set() and messages and messages[-1].get("role") == "tool":
            raise RuntimeError("held until the worker is killed")
        return default_responder(request)

    input_topic = kafka.new_topic("mcp-in", partitions=1)
    output_topic = kafka.new_topic("mcp-out", partitions=1)
    call_log = tmp_path / "calls.log"
    with StubLLMServer(responder=responder) as llm, running_server(free_port(), call_log) as calculator:
        env = {"CALCULATOR_MCP_URL": calculator.endpoint, "OPENAI_BASE_URL": llm.base_url,
               "AGENTPLAN_RETRY_BACKOFF_MAX_S": "0.5"}
        victim = worker_factory(AGENT, input_topic, output_topic, app_id, instance_id="mcp", env=env)
        victim.wait_ready()
        kafka.produce(input_topic, [("q1", json.dumps(QUESTION))])

        # The tool response (carrying the result, 42) is in a committed changelog record.
        changelog = f"{app_id}-state-changelog"
        assert wait_for(lambda: any(b"ToolResponseEvent" in v and b"42" in v
                                    for v in committed_states(kafka.bootstrap_servers, changelog)),
                        timeout_s=60), victim.log()
        assert mcp_calls(call_log) == [(17, 25)]
        victim.kill()

        hold.clear()
        restarted = worker_factory(AGENT, input_topic, output_topic, app_id, instance_id="mcp", env=env)
        outputs = read_all(kafka.bootstrap_servers, output_topic, 1, expected=1, timeout_s=90)
        assert [json.loads(m.value()) for m in outputs] == [{"id": "q1", "answer": '{"result": 42}'}], \
            restarted.log()
        # One call at the MCP server, and one first model call: the resumed run reused both results.
        assert mcp_calls(call_log) == [(17, 25)]
        first_calls = [r for r in llm.requests if r["status"] == 200 and r["messages"][-1]["role"] != "tool"]
        assert len(first_calls) == 1
        assert restarted.terminate() == 0
