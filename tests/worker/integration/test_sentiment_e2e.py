"""Deliverable 4a: the seed sentiment agent end to end through `agentfleet worker`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from examples.sentiment.custom_types import SentimentAnalysisResult
from tests.worker.integration.harness import header, read_all, wait_for

pytestmark = pytest.mark.integration

SEED_INPUT = Path(__file__).resolve().parents[3] / "examples" / "sentiment" / "resources" / "input.txt"
EXPECTED = {"1": "positive", "2": "negative", "3": "neutral", "4": "positive", "5": "negative",
            "7": "positive", "8": "negative"}


@pytest.mark.parametrize("guarantee", ["exactly-once", "at-least-once"])
def test_seed_sentiment_agent_through_worker(any_broker, worker_factory, app_id, stub_llm, guarantee):
    kafka = any_broker  # smoke: on the session broker and on embedded Tansu
    input_topic = kafka.new_topic("sentiment-in", partitions=4)
    output_topic = kafka.new_topic("sentiment-out", partitions=4)
    worker = worker_factory("examples.sentiment.sentiment_agent:SentimentAnalysisAgent", input_topic, output_topic,
                            app_id, extra_args=["--processing-guarantee", guarantee,
                                        "--input-model", "examples.sentiment.custom_types:TextInput",
                                        "--resource", "local_llm=examples.sentiment.custom_types:local_llm_descriptor"])
    worker.wait_ready()
    lines = [line for line in SEED_INPUT.read_text(encoding="utf-8").splitlines() if line.strip()]
    kafka.produce(input_topic, [(json.loads(line)["id"], line) for line in lines])

    outputs = read_all(kafka.bootstrap_servers, output_topic, 4, expected=7, timeout_s=60)
    results = {m.key().decode(): SentimentAnalysisResult.model_validate_json(m.value()) for m in outputs}
    assert len(outputs) == 7, worker.log()
    assert {k: r.sentiment for k, r in results.items()} == EXPECTED
    for msg in outputs:
        assert header(msg, "agentfleet.source.topic") == input_topic
        assert header(msg, "agentfleet.app.id") == app_id
        assert header(msg, "agentfleet.txn")
    assert stub_llm.request_count == 7
    # The counter moves after the commit returns, which a reader can see first (at-least-once on Tansu).
    assert wait_for(lambda: worker.metric("agentfleet_records_out_total") == 7, 10), \
        worker.metric("agentfleet_records_out_total")
    # Both modes count committed batches; only exactly-once uses Kafka transactions for them.
    assert worker.metric("agentfleet_transactions_committed_total") >= 1
    assert worker.terminate() == 0, worker.log()
    # The harness passes -X session.timeout.ms; only consumers get it, so librdkafka warns of nothing.
    assert "CONFWARN" not in worker.log(), worker.log()
