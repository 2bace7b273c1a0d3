"""RAG + long-term memory on a worker that is SIGKILLed mid-stream and replaced by one with no local state.

The replacement restores every key from the changelog: no embedding or retrieval call whose result
was committed is made again (counted per input text at the stub), every input has one output, and
each key's memory set holds exactly the notes of its inputs, each once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentplan import Document, OpenAIEmbeddingModelConnection, OpenAIEmbeddingModelSetup
from agentplan.integrations.qdrant import QdrantVectorStore
from agentplan.testing.llm_stub import StubLLMServer
from tests.worker.integration.harness import TopicTail, read_all, wait_for
from tests.worker.integration.rag_agents import KB_PATH_ENV
from worker.operator_tools import inspect_key

pytestmark = pytest.mark.integration

AGENT = "tests.worker.integration.rag_agents:RagMemoryAgent"
PARTITIONS = 2
KEYS = ["k0", "k1", "k2"]
ROUNDS = 3
QUESTIONS = ["how do I get a refund", "when will my order ship", "how do I reset my password"]
HELD_KEY, HELD_SEQ = "k0", 1
RETRIEVAL_RESPONSE = "agentplan.retrieval_events:ContextRetrievalResponseEvent"


def texts(key: str, seq: int) -> dict[str, str]:
    question = QUESTIONS[seq]
    return {kind: f"{kind} {key} {seq}: {question}" for kind in ("note", "ask", "recall")}


def load_kb(stub: StubLLMServer, path: Path) -> None:
    setup = OpenAIEmbeddingModelSetup(connection=OpenAIEmbeddingModelConnection(
        base_url=stub.base_url, api_key="test"), model="stub-embed")
    store = QdrantVectorStore(embedding_model=setup, collection="faq", path=str(path))
    store.add([Document(id="refund", content="refund within 30 days"),
               Document(id="shipping", content="order will ship within 2 days"),
               Document(id="password", content="reset password with the link")])
    store.close()  # Qdrant's local mode: one process at a time


def held_run_is_committed(state_dir: Path, app_id: str) -> bool:
    """The held input's note and retrieval result are in the committed state (local store = changelog)."""
    found = inspect_key(state_dir, app_id, HELD_KEY, raw=True)
    if found is None or found["state"].get("r") is None:
        return False
    pending = [event["type"] for event in found["state"]["r"]["pending"]]
    return RETRIEVAL_RESPONSE in pending and texts(HELD_KEY, HELD_SEQ)["note"] in json.dumps(found["state"]["m"])


def test_rag_and_memory_survive_sigkill_without_repeating_committed_calls(
        kafka, worker_factory, stub_llm: StubLLMServer, app_id: str, tmp_path: Path) -> None:
    kb = tmp_path / "kb"
    load_kb(stub_llm, kb)
    config = tmp_path / "agent.yaml"
    config.write_text("long-term-memory.embedding-model-setup: embeddings\nretry-backoff-s: 0.05\n")
    input_topic = kafka.new_topic("rag-in", partitions=PARTITIONS)
    output_topic = kafka.new_topic("rag-out", partitions=PARTITIONS)

    def start(instance: str):  # noqa: ANN202 - a WorkerProcess
        worker = worker_factory(AGENT, input_topic, output_topic, app_id, instance_id=instance,
                                state_dir=tmp_path / f"state-{instance}", env={KB_PATH_ENV: str(kb)},
                                extra_args=["--agent-config", str(config)])
        worker.wait_ready(min_partitions=PARTITIONS)
        return worker

    first = start("a")
    stub_llm.embeddings.hold(texts(HELD_KEY, HELD_SEQ)["recall"])
    kafka.produce(input_topic, [(key, json.dumps({"key": key, "seq": seq, "question": QUESTIONS[seq]}))
                                for seq in range(ROUNDS) for key in KEYS])
    # Everything but the held input and the one queued behind it on its key.
    before = read_all(kafka.bootstrap_servers, output_topic, PARTITIONS, expected=ROUNDS * len(KEYS) - 2)
    assert len(before) == ROUNDS * len(KEYS) - 2, first.log()
    assert wait_for(lambda: stub_llm.embeddings.held_count() >= 1, 30), first.log()
    assert wait_for(lambda: held_run_is_committed(tmp_path / "state-a", app_id), 30), first.log()
    first.kill()
    stub_llm.embeddings.release()

    second = start("b")  # an empty state dir: every key comes back from the changelog
    tail = TopicTail(kafka.bootstrap_servers, output_topic, PARTITIONS).start()
    try:
        assert wait_for(lambda: len(tail) >= ROUNDS * len(KEYS), 60), second.log()
        assert second.metric("agentfleet_restore_records_total") >= len(KEYS)
        assert second.terminate() == 0, second.log()
        assert tail.wait_caught_up(), "output tail did not catch up"  # a duplicate would be read by now
    finally:
        outputs = tail.stop()
    values = [json.loads(m.value()) for m in outputs]
    assert sorted((v["key"], v["seq"]) for v in values) == sorted((k, s) for k in KEYS for s in range(ROUNDS))

    for key in KEYS:
        for seq in range(ROUNDS):
            calls = {kind: stub_llm.embeddings.count(text) for kind, text in texts(key, seq).items()}
            assert calls == {"note": 1, "ask": 1, "recall": 1}, (key, seq, calls)
        last = max((v for v in values if v["key"] == key), key=lambda v: v["seq"])
        assert last["notes"] == [texts(key, seq)["note"] for seq in range(ROUNDS)]
    assert {v["docs"][0] for v in values if v["seq"] == 0} == {"refund"}
