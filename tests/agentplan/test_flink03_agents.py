"""Agents written for Flink Agents 0.3.1 (examples/flink03), run unchanged but for their imports on
the local environment against the LLM stub (over HTTP, through the real openai client); the RAG agent
over an embedded Chroma store, the MCP agent against the real calculator MCP server."""

from __future__ import annotations

import ast
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentplan import AgentPlan, AgentsExecutionEnvironment, Document, LocalExecutionEnvironment, ResourceType
from agentplan.chat_models import schema_instruction
from agentplan.testing.llm_stub import StubLLMServer, StubReply
from examples.flink03 import (
    mcp_tools,
    rag_chroma,
    react_calculator,
    review_analysis,
    skills_math,
    status_digest,
    ticket_fanout,
)
from examples.mcp_agent.calculator_server import running_server
from tests.agentplan.flink03_models import flink03_responder
from tests.agentplan.support import make_config
from worker.kafka.embedded import free_port


@pytest.fixture
def request_bodies() -> list[dict[str, Any]]:
    """Every chat request body the stub received, whole (its log keeps messages and tools only)."""
    return []


@pytest.fixture
def flink03_llm(monkeypatch: pytest.MonkeyPatch, request_bodies: list[dict[str, Any]]) -> Iterator[StubLLMServer]:
    def responder(body: dict[str, Any]) -> StubReply:
        request_bodies.append(body)
        return flink03_responder(body)

    with StubLLMServer(responder=responder) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        yield server


def local_env() -> LocalExecutionEnvironment:
    env = AgentsExecutionEnvironment.get_execution_environment()
    env.config = make_config()  # host AGENTPLAN_* variables stay out of tests
    return env


REVIEW_YAML = Path(review_analysis.__file__).with_suffix(".yaml")


@pytest.mark.parametrize("declared", ["python", "yaml"])
def test_review_analysis_with_tool_and_prompt_args(flink03_llm: StubLLMServer, declared: str) -> None:
    review_analysis.SHIPPING_NOTIFICATIONS.clear()
    reviews = [{"id": "p1", "review": "I love it, great sound"},
               {"id": "p2", "review": "The box arrived damaged and the screen was cracked"},
               {"id": "p3", "review": "It is fine I guess"}]
    env = local_env()
    if declared == "yaml":
        env.load_yaml(REVIEW_YAML)
    agent = review_analysis.ReviewAnalysisAgent() if declared == "python" else "review_analysis"
    outputs = env.from_list([{"key": r["id"], "value": r} for r in reviews]).apply(agent).to_list()
    env.execute(job_name="review analysis")

    results = {key: value for entry in outputs for key, value in entry.items()}
    assert {k: (r.id, r.score) for k, r in results.items()} == {"p1": ("p1", 5), "p2": ("p2", 1), "p3": ("p3", 3)}
    assert all(isinstance(r, review_analysis.ProductReviewAnalysisRes) for r in results.values())
    assert [{"id": "p2", "review": reviews[1]["review"]}] == review_analysis.SHIPPING_NOTIFICATIONS
    # prompt_args filled the setup's prompt; the empty user message of the request was not sent.
    first = flink03_llm.requests[0]["messages"]
    assert [m["role"] for m in first] == ["system", "user"]
    assert first[1]["content"].startswith("Product review: {")
    # The tool's numpy-style docstring describes its parameters to the model.
    [tool_schema] = flink03_llm.requests[0]["tools"]
    assert tool_schema["function"]["parameters"]["properties"]["id"]["description"] == \
        "The id of the product that received the negative review."
    tool_answer = [m for r in flink03_llm.requests for m in r["messages"] if m["role"] == "tool"]
    assert tool_answer and tool_answer[0]["content"] == "shipping manager notified about product p2"


def test_ticket_fanout_custom_event_type_and_structured_output(flink03_llm: StubLLMServer) -> None:
    tickets = [{"id": "t1", "questions": ["I want a refund for a double charge", "My package did not arrive",
                                          "URGENT: login error on the app"]},
               {"id": "t2", "questions": ["Do you ship to Norway?"]}]
    env = local_env()
    outputs = env.from_list([{"k": t["id"], "v": t} for t in tickets]) \
        .apply(ticket_fanout.TicketTriageAgent()).to_list()
    env.execute()

    assert sorted(outputs, key=lambda e: next(iter(e))) == [
        {"t1": {"ticket_id": "t1", "categories": ["billing", "shipping", "technical"], "urgent": True}},
        {"t2": {"ticket_id": "t2", "categories": ["other"], "urgent": False}},
    ]
    assert flink03_llm.request_count == 4  # one classification per question


def test_react_agent_with_output_schema(flink03_llm: StubLLMServer) -> None:
    env = react_calculator.prepare(local_env())
    outputs = env.from_list([{"key": "q1", "value": {"a": 3, "b": 4, "c": 5}},
                             {"key": "q2", "value": {"a": 1.5, "b": 0.5, "c": -2}}]) \
        .apply(react_calculator.calculator_agent()).to_list()
    env.execute()

    results = {key: value for entry in outputs for key, value in entry.items()}
    assert {k: r.result for k, r in results.items()} == {"q1": 35.0, "q2": -4.0}
    assert all(isinstance(r, react_calculator.CalculationResult) for r in results.values())
    assert flink03_llm.request_count == 6  # add, multiply, answer per question
    # Upstream's messages: the prompt's system message, the schema instruction after it, the user's question.
    [first] = [r["messages"] for r in flink03_llm.requests if len(r["messages"]) == 3
               and r["messages"][-1]["content"] == "What is (3 + 4) * 5?"]
    assert first == [
        {"role": "system", "content": react_calculator.calculator_prompt.messages[0].content},  # type: ignore[index]
        {"role": "system", "content": schema_instruction(react_calculator.CalculationResult).content},
        {"role": "user", "content": "What is (3 + 4) * 5?"},
    ]


DIGEST_YAML = Path(status_digest.__file__).with_suffix(".yaml")


@pytest.mark.parametrize("declared", ["python", "yaml"])
def test_status_digest_text_prompt_is_the_system_message(flink03_llm: StubLLMServer, declared: str) -> None:
    env = local_env()
    if declared == "yaml":
        env.load_yaml(DIGEST_YAML)
    agent = status_digest.StatusDigestAgent() if declared == "python" else "status_digest"
    outputs = env.from_list([{"key": "api", "value": {"service": "api", "incidents": ["p99 latency 2s"]}}]) \
        .apply(agent).to_list()
    env.execute()

    assert outputs == [{"api": status_digest.StatusDigest(service="api", status="degraded", summary="1 incident(s)")}]
    # The setup's text prompt, filled through prompt_args, is the one (system) message; the request's
    # empty user message is not sent.
    assert [r["messages"] for r in flink03_llm.requests] == [[{"role": "system", "content": (
        "You write the status line of one service for the on-call channel.\n"
        "Service: api\n"
        "Incidents of the last hour, one per line:\n"
        "p99 latency 2s\n"
        'Answer with JSON only: {"status": "ok" or "degraded" or "down", "summary": "<at most 12 words>"}')}]]


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FAQ = EXAMPLES / "rag" / "resources" / "faq.jsonl"


def load_faq(kb_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The FAQ into the agent's own Chroma store (what `agentfleet kb load` does)."""
    monkeypatch.setenv("CHROMA_PERSIST_DIR", str(kb_dir))
    store = AgentPlan.from_agent(rag_chroma.FaqRagAgent()).get_resource("faq_knowledge_base", ResourceType.VECTOR_STORE)
    docs = [Document(**json.loads(line)) for line in FAQ.read_text(encoding="utf-8").splitlines() if line.strip()]
    store.add(docs, collection_name=rag_chroma.FAQ_COLLECTION)
    store.close()


def test_rag_over_chroma_with_context_retrieval(flink03_llm: StubLLMServer, request_bodies: list[dict[str, Any]],
                                                 monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    load_faq(tmp_path / "kb", monkeypatch)
    questions = [{"id": "q1", "question": "How do I reset my password?"},
                 {"id": "q2", "question": "How long does the battery charge take?"}]
    env = local_env()
    outputs = env.from_list([{"key": q["id"], "value": q} for q in questions]) \
        .apply(rag_chroma.FaqRagAgent()).to_list()
    env.execute()

    results = {key: value for entry in outputs for key, value in entry.items()}
    assert {k: r["sources"][0] for k, r in results.items()} == {"q1": "password", "q2": "battery"}
    assert all(len(r["sources"]) == 2 for r in results.values())  # max_results of the request
    assert results["q1"]["answer"].startswith("From the FAQ: Password reset: use the forgot password link")
    # prompt_args filled both placeholders; the empty user message of the request was not sent.
    [first] = [r for r in request_bodies if "reset my password" in r["messages"][-1]["content"]]
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    assert first["messages"][1]["content"] == "Customer question: How do I reset my password?"
    assert first["temperature"] == 0.0 and first["max_tokens"] == 512  # the setup's parameters
    # The store and the queries were embedded by the stub's /v1/embeddings.
    assert flink03_llm.embeddings.count("How do I reset my password?") == 1


def test_mcp_tool_and_prompt_by_their_names(flink03_llm: StubLLMServer, request_bodies: list[dict[str, Any]],
                                            monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = tmp_path / "calls.log"
    with running_server(free_port(), calls) as calculator:
        monkeypatch.setenv("MCP_SERVER_ENDPOINT", calculator.endpoint)
        env = local_env()
        outputs = env.from_list([{"key": "s1", "value": {"id": "s1", "a": 17, "b": 25}},
                                 {"key": "s2", "value": {"id": "s2", "a": 1200, "b": -34}}]) \
            .apply(mcp_tools.McpCalculatorAgent()).to_list()
        env.execute()

    results = {key: value for entry in outputs for key, value in entry.items()}
    assert results == {"s1": {"id": "s1", "answer": "17 + 25 = 42"},
                       "s2": {"id": "s2", "answer": "1200 + -34 = 1166"}}
    # The server itself ran both additions (its own call log), once each.
    assert sorted((c["a"], c["b"]) for c in map(json.loads, calls.read_text().splitlines())) == \
        [(17, 25), (1200, -34)]
    # The server's prompt, filled through prompt_args, is the request; its tool is offered, strict.
    first = request_bodies[0]
    assert first["messages"][-1]["content"].startswith("Use the add tool to add ")
    [add] = first["tools"]
    assert add["function"]["name"] == "add" and add["function"]["strict"] is True
    assert add["function"]["parameters"]["additionalProperties"] is False
    assert "strict" not in first  # upstream's setup argument, not a request parameter


def test_skill_commands_really_run_in_bash(flink03_llm: StubLLMServer) -> None:
    questions = {"m1": "What is 1234 times 5678?", "m2": "What is the sum of 4 8 15 16 23 42?",
                 "m3": "What is 2 to the power 10?"}
    env = local_env()
    outputs = env.from_list([{"key": k, "value": {"id": k, "question": q}} for k, q in questions.items()]) \
        .apply(skills_math.SkillsMathAgent()).to_list()
    env.execute()

    results = {key: value["answer"] for entry in outputs for key, value in entry.items()}
    assert results["m1"] == "The answer is 7006652."  # expr's output
    assert results["m2"] == "The answer is 108."  # the skill's script, run from its directory
    assert results["m3"].startswith("refused: ") and "python3" in results["m3"]  # not an allowed command
    bash_results = [json.loads(m["content"]) for r in flink03_llm.requests for m in r["messages"]
                    if m["role"] == "tool" and m["content"].startswith('{"exit_code"')]
    assert sorted(r["stdout"] for r in bash_results) == ["108\n", "7006652\n"]
    # The setup's skill is announced in a system message after the agent's own.
    first = flink03_llm.requests[0]["messages"]
    assert first[0]["content"] == "You answer arithmetic questions exactly."
    assert first[1]["role"] == "system" and "math-calculator" in first[1]["content"]


FLINK03_MODULES = sorted(p for p in (EXAMPLES / "flink03").glob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("module", FLINK03_MODULES, ids=lambda p: p.name)
def test_ported_agents_import_only_agentplan_top_level(module: Path) -> None:
    """"Only the imports changed" stays checkable: agentplan's names come from its top level, the rest
    from the standard library and pydantic."""
    imported: list[str] = []
    for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{module.name}: relative import"
            imported.append(node.module or "")
    allowed = sys.stdlib_module_names | {"agentplan", "pydantic"}
    assert [m for m in imported if m.split(".")[0] == "agentplan" and m != "agentplan"] == []
    assert [m for m in imported if m.split(".")[0] not in allowed] == []
