"""The RAG and memory examples on `agentfleet worker`: the same answers as on the local runner.

The RAG example's knowledge base is loaded with `agentfleet kb load` through the example's own store
descriptor; the memory example runs with its agent configuration file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from examples.rag.rag_agent import KB_DIR_ENV
from tests.worker.integration.harness import read_all
from worker.cli import app

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_rag_example_on_a_worker(kafka, worker_factory, app_id, stub_llm, tmp_path: Path) -> None:
    env = {KB_DIR_ENV: str(tmp_path / "kb"), "OPENAI_BASE_URL": stub_llm.base_url, "OPENAI_API_KEY": "test"}
    loaded = CliRunner(env=env).invoke(app, [
        "kb", "load", "--agent", "examples.rag.rag_agent:RagAgent", "--vector-store", "faq_store", "faq",
        str(EXAMPLES / "rag" / "resources" / "faq.jsonl")])
    assert loaded.exit_code == 0 and "loaded 5 documents into faq" in loaded.stderr, loaded.output

    input_topic, output_topic = kafka.new_topic("rag-q", partitions=2), kafka.new_topic("rag-a", partitions=2)
    worker = worker_factory("examples.rag.rag_agent:RagAgent", input_topic, output_topic, app_id,
                            env={KB_DIR_ENV: env[KB_DIR_ENV]})
    worker.wait_ready(min_partitions=2)
    questions = lines(EXAMPLES / "rag" / "resources" / "questions.jsonl")
    kafka.produce(input_topic, [(q["id"], json.dumps(q)) for q in questions])
    outputs = [json.loads(m.value()) for m in read_all(kafka.bootstrap_servers, output_topic, 2, len(questions))]
    assert {o["id"]: o["sources"][0] for o in outputs} == {"q1": "password", "q2": "shipping", "q3": "refund",
                                                          "q4": "battery"}, worker.log()
    assert worker.terminate() == 0, worker.log()


def test_memory_example_on_a_worker(kafka, worker_factory, app_id, tmp_path: Path) -> None:
    input_topic, output_topic = kafka.new_topic("mem-in", partitions=2), kafka.new_topic("mem-out", partitions=2)
    worker = worker_factory("examples.memory.memory_agent:MemoryAgent", input_topic, output_topic, app_id,
                            extra_args=["--agent-config", str(EXAMPLES / "memory" / "resources" / "agent_config.yaml")])
    worker.wait_ready(min_partitions=2)
    inputs = lines(EXAMPLES / "memory" / "resources" / "input.jsonl")
    kafka.produce(input_topic, [(i["user"], json.dumps(i)) for i in inputs])
    outputs = [json.loads(m.value()) for m in read_all(kafka.bootstrap_servers, output_topic, 2, len(inputs))]
    assert {o["message"]: o["recalled"] for o in outputs if "recalled" in o} == {
        "what is my dog called": ["my dog is called Pixel", "I am allergic to peanuts"],
        "when do I work": ["I work night shifts at the hospital"],
        "can I eat peanuts": ["I am allergic to peanuts", "my dog is called Pixel"]}, worker.log()
    assert worker.terminate() == 0, worker.log()
