"""Flink Agents 0.3.1-style agents on the worker over Apache Kafka: ported agents end to end (the review
agent, and the held-out RAG, MCP and skills agents with their real Chroma store, MCP server and bash),
and a durable call's reconciler after its worker was SIGKILLed mid-call."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentplan.testing.llm_stub import StubLLMServer
from examples.flink03.review_analysis import ProductReviewAnalysisRes
from examples.mcp_agent.calculator_server import running_server
from tests.agentplan.flink03_models import flink03_responder
from tests.second_reader import read_topic_to_end
from tests.worker.integration.harness import read_all, wait_for
from worker.cli import app
from worker.kafka.embedded import free_port

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("agent", ["examples.flink03.review_analysis:ReviewAnalysisAgent",
                                   "examples/flink03/review_analysis.yaml#review_analysis"])
def test_review_analysis_agent_through_worker(kafka, worker_factory, app_id, agent):
    input_topic = kafka.new_topic("reviews-in", partitions=2)
    output_topic = kafka.new_topic("reviews-out", partitions=2)
    reviews = [{"id": "p1", "review": "I love it, great sound"},
               {"id": "p2", "review": "The box arrived damaged and the screen was cracked"},
               {"id": "p3", "review": "It is fine I guess"}]
    with StubLLMServer(responder=flink03_responder) as llm:
        worker = worker_factory(agent, input_topic, output_topic, app_id, env={"OPENAI_BASE_URL": llm.base_url})
        worker.wait_ready()
        kafka.produce(input_topic, [(r["id"], json.dumps(r)) for r in reviews])
        outputs = read_all(kafka.bootstrap_servers, output_topic, 2, expected=3, timeout_s=60)
        results = {m.key().decode(): ProductReviewAnalysisRes.model_validate_json(m.value()) for m in outputs}
        assert len(outputs) == 3, worker.log()
        assert {k: r.score for k, r in results.items()} == {"p1": 5, "p2": 1, "p3": 3}
        tool_results = [m["content"] for r in llm.requests for m in r["messages"] if m["role"] == "tool"]
        assert tool_results == ["shipping manager notified about product p2"]
        assert llm.request_count == 4  # p2 asked twice: the tool call, then the answer
        assert worker.terminate() == 0, worker.log()


def test_reconciler_runs_after_sigkill_during_the_call(kafka, worker_factory, app_id, tmp_path: Path):
    input_topic = kafka.new_topic("orders-in", partitions=1)
    output_topic = kafka.new_topic("orders-out", partitions=1)
    calls = tmp_path / "calls"
    calls.mkdir()
    env = {"FLINK03_CALL_DIR": str(calls)}
    agent = "tests.worker.integration.flink03_agents:ReconciledChargeAgent"
    victim = worker_factory(agent, input_topic, output_topic, app_id, instance_id="w", env=env)
    victim.wait_ready()
    kafka.produce(input_topic, [("o1", json.dumps({"id": "o1"}))])
    # The call starts only once its start is committed, so killing it now leaves that start unanswered.
    assert wait_for(lambda: (calls / "charge.log").exists(), timeout_s=60), victim.log()
    victim.kill()

    successor = worker_factory(agent, input_topic, output_topic, app_id, instance_id="w", env=env,
                               state_dir=tmp_path / "fresh-state")  # restored from the changelog
    successor.wait_ready(timeout_s=90)
    outputs = read_all(kafka.bootstrap_servers, output_topic, 1, expected=1, timeout_s=60)
    assert [json.loads(m.value()) for m in outputs] == [{"id": "o1", "result": "reconciled o1"}], successor.log()
    assert (calls / "charge.log").read_text().split() == ["o1"]  # never called again
    assert (calls / "reconcile.log").read_text().split() == ["o1"]
    assert successor.terminate() == 0, successor.log()


FAQ = Path(__file__).resolve().parents[3] / "examples" / "rag" / "resources" / "faq.jsonl"
HELD_OUT = {  # agent -> its inputs (by key) and the answers they must get
    "rag_chroma:FaqRagAgent": (
        {"q1": {"id": "q1", "question": "How do I reset my password?"},
         "q2": {"id": "q2", "question": "How long does shipping take for my orders?"},
         "q3": {"id": "q3", "question": "Can I get a refund within 30 days?"}},
        {"q1": ["password"], "q2": ["shipping"], "q3": ["refund"]}),
    "mcp_tools:McpCalculatorAgent": (
        {"s1": {"id": "s1", "a": 17, "b": 25}, "s2": {"id": "s2", "a": 1200, "b": -34}},
        {"s1": "17 + 25 = 42", "s2": "1200 + -34 = 1166"}),
    "skills_math:SkillsMathAgent": (
        {"m1": {"id": "m1", "question": "What is 1234 times 5678?"},
         "m2": {"id": "m2", "question": "What is the sum of 4 8 15 16 23 42?"}},
        {"m1": "The answer is 7006652.", "m2": "The answer is 108."}),
}


@contextlib.contextmanager
def agent_services(agent: str, llm: StubLLMServer, tmp_path: Path) -> Iterator[dict[str, str]]:
    """What the agent needs before its worker starts (environment for the worker): the Chroma
    knowledge base loaded with `agentfleet kb load`, or the calculator MCP server (stopped after)."""
    if agent.startswith("rag_chroma"):
        env = {"CHROMA_PERSIST_DIR": str(tmp_path / "kb"), "OPENAI_BASE_URL": llm.base_url, "OPENAI_API_KEY": "test"}
        loaded = CliRunner(env=env).invoke(app, ["kb", "load", "--agent", f"examples.flink03.{agent}",
                                                 "--vector-store", "faq_knowledge_base", "faq", str(FAQ)])
        assert loaded.exit_code == 0 and "loaded 5 documents into faq" in loaded.stderr, loaded.output
        yield {"CHROMA_PERSIST_DIR": env["CHROMA_PERSIST_DIR"]}
    elif agent.startswith("mcp_tools"):
        with running_server(free_port(), tmp_path / "mcp-calls.log") as calculator:
            yield {"MCP_SERVER_ENDPOINT": calculator.endpoint}
    else:
        yield {}


@pytest.mark.parametrize("agent", sorted(HELD_OUT))
def test_held_out_port_through_worker(kafka, worker_factory, app_id, tmp_path: Path, agent: str) -> None:
    inputs, expected = HELD_OUT[agent]
    input_topic = kafka.new_topic("held-out-in", partitions=2)
    output_topic = kafka.new_topic("held-out-out", partitions=2)
    with StubLLMServer(responder=flink03_responder) as llm, agent_services(agent, llm, tmp_path) as env:
        worker = worker_factory(f"examples.flink03.{agent}", input_topic, output_topic, app_id,
                                env={"OPENAI_BASE_URL": llm.base_url, **env})
        worker.wait_ready(min_partitions=2)
        kafka.produce(input_topic, [(key, json.dumps(value)) for key, value in inputs.items()])
        outputs = read_all(kafka.bootstrap_servers, output_topic, 2, expected=len(inputs), timeout_s=60)
        assert len(outputs) == len(inputs), worker.log()
        assert worker.terminate() == 0, worker.log()
        mcp_log = tmp_path / "mcp-calls.log"
        mcp_calls = sorted((c["a"], c["b"]) for c in map(json.loads, mcp_log.read_text().splitlines())) \
            if mcp_log.exists() else []
        tool_results = [m["content"] for r in llm.requests for m in r["messages"] if m["role"] == "tool"]

    # Exactly one output per input: everything committed by the stopped worker, read to its end by a second client.
    committed = read_topic_to_end(kafka.bootstrap_servers, output_topic)
    results = {r.key.decode(): json.loads(r.value) for r in committed if r.key is not None and r.value is not None}
    assert len(committed) == len(results) == len(inputs)
    if agent.startswith("rag_chroma"):  # the nearest FAQ entry, retrieved from the loaded store
        assert {k: r["sources"][:1] for k, r in results.items()} == expected
        assert all(r["answer"].startswith("From the FAQ: ") for r in results.values())
    else:
        assert {k: r["answer"] for k, r in results.items()} == expected
    if agent.startswith("mcp_tools"):  # the server's own log: each addition ran there, once
        assert mcp_calls == [(17, 25), (1200, -34)]
    if agent.startswith("skills_math"):  # bash really ran expr and the skill's script
        assert sorted(json.loads(t)["stdout"] for t in tool_results if t.startswith('{"exit_code"')) == \
            ["108\n", "7006652\n"]
