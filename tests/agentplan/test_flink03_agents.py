"""Three agents written for Flink Agents 0.3.1 (examples/flink03), run unchanged but for their imports on
the local environment against the LLM stub (over HTTP, through the real openai client)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentplan import AgentsExecutionEnvironment, LocalExecutionEnvironment
from agentplan.testing.llm_stub import StubLLMServer
from examples.flink03 import react_calculator, review_analysis, ticket_fanout
from tests.agentplan.flink03_models import flink03_responder
from tests.agentplan.support import make_config


@pytest.fixture
def flink03_llm(monkeypatch: pytest.MonkeyPatch) -> Iterator[StubLLMServer]:
    with StubLLMServer(responder=flink03_responder) as server:
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
