"""The messages a ReAct agent sends, on the worker over Apache Kafka, are Flink Agents': the setup's
text prompt as the system message, the agent's prompt, and the schema instruction after its system
message, once (the worker's event round trip must not make the chat action add it again)."""

from __future__ import annotations

import json

import pytest

from agentplan.chat_models import schema_instruction
from agentplan.testing.llm_stub import StubLLMServer
from tests.worker.integration.harness import read_all
from tests.worker.integration.prompt_role_agents import HOUSE_RULES, Verdict

pytestmark = pytest.mark.integration


def test_react_messages_through_worker(kafka, worker_factory, app_id, stub_llm: StubLLMServer) -> None:
    input_topic = kafka.new_topic("judge-in", partitions=1)
    output_topic = kafka.new_topic("judge-out", partitions=1)
    reviews = {"r1": ("kettle", "boils fast"), "r2": ("toaster", "burns bread")}
    worker = worker_factory("tests.worker.integration.prompt_role_agents:ReviewJudgeAgent", input_topic,
                            output_topic, app_id)
    worker.wait_ready()
    kafka.produce(input_topic, [(key, json.dumps({"product": product, "text": f'{text} [[json {{"label": "{key}", '
                                                   '"score": 0.5}]]'}))
                                for key, (product, text) in reviews.items()])
    outputs = read_all(kafka.bootstrap_servers, output_topic, 1, expected=2, timeout_s=60)
    assert {m.key().decode(): Verdict.model_validate_json(m.value()) for m in outputs} == {
        "r1": Verdict(label="r1", score=0.5), "r2": Verdict(label="r2", score=0.5)}, worker.log()
    instruction = schema_instruction(Verdict).content
    # (keys run concurrently: the requests' order is not the inputs')
    assert sorted([(m["role"], m["content"]) for m in r["messages"]] for r in stub_llm.requests) == [
        [("system", HOUSE_RULES), ("system", f"You judge reviews of {product}."), ("system", instruction),
         ("user", f'Review: {text} [[json {{"label": "{key}", "score": 0.5}}]]')]
        for key, (product, text) in sorted(reviews.items())]
    assert worker.terminate() == 0, worker.log()
