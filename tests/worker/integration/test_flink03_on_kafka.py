"""Flink Agents 0.3.1-style agents on the worker over Apache Kafka: a ported agent end to end, and a
durable call's reconciler after its worker was SIGKILLed mid-call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentplan.testing.llm_stub import StubLLMServer
from examples.flink03.review_analysis import ProductReviewAnalysisRes
from tests.agentplan.flink03_models import flink03_responder
from tests.worker.integration.harness import read_all, wait_for

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
