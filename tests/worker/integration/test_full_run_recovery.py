"""A run making every kind of durable call (retrieval, chat, MCP tool, chat, memory search, memory add) on a
worker SIGKILLed while one run is half done, replaced by a worker with an empty state directory.

The kill lands while the held run's last call (its memory add's embedding) waits at the stub, after its
first five calls were committed: four in the events pending in its state, the memory search in the
journal of the action in flight. What the journal guarantees, and what is asserted: a call whose result
was committed is never made again (each distinct embedding, chat and MCP request is answered exactly
once; the held embedding was never answered before the kill, so its one answer is the replacement's),
every input has one output, each key's memory set holds what committed, and the event log holds each
committed run once.
"""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from agentplan.long_term_memory import LTM_ROOT
from agentplan.testing.llm_stub import StubLLMServer
from examples.mcp_agent.calculator_server import running_server
from tests.worker.integration.full_run_agents import KB_PATH_ENV, call_texts, load_kb
from tests.worker.integration.harness import TopicTail, header, wait_for
from worker.kafka.embedded import free_port
from worker.operator_tools import describe_state, inspect_key

pytestmark = pytest.mark.integration

AGENT = "tests.worker.integration.full_run_agents:FullRunAgent"
PARTITIONS = 2
KEYS = ["k0", "k1", "k2"]
ROUNDS = 3
QUESTIONS = ["how do I get a refund", "when will my order ship", "how do I reset my password"]
EXPECTED_DOCS = ["refund", "shipping", "password"]
HELD_KEY, HELD_SEQ = "k0", 1
INPUTS = [(key, seq) for seq in range(ROUNDS) for key in KEYS]
EVENTS = ["InputEvent", "ContextRetrievalRequestEvent", "ContextRetrievalResponseEvent", "ChatRequestEvent",
          "ToolRequestEvent", "ToolResponseEvent", "ChatResponseEvent", "OutputEvent"]
ACTIONS = ["look_up", "context_retrieval_action", "ask_model", "chat_model_action", "tool_call_action",
           "chat_model_action", "remember_and_answer"]


def addends(key: str, seq: int) -> tuple[int, int]:
    """Tool arguments ``a`` and ``b`` unique to the input, so the MCP server's log tells the runs' calls apart."""
    return 100 * (KEYS.index(key) + 1) + seq, 7


def notes_in(memory: dict[str, Any]) -> list[str]:
    """The values in the memory set ``notes`` of a key's short-term memory (as describe_state shows it)."""
    return [item["value"] for item in memory[LTM_ROOT]["notes"]["items"].values()]


def notes_of(state_dir: Path, app_id: str, key: str) -> list[str]:
    """The key's notes in a worker's local state store (``agentfleet state inspect``)."""
    found = inspect_key(state_dir, app_id, key)
    assert found is not None, key
    return notes_in(found["memory"])


def committed_notes(bootstrap: str, app_id: str) -> dict[str, list[str]]:
    """Each key's notes in its last committed changelog record (read_committed)."""
    tail = TopicTail(bootstrap, f"{app_id}-state-changelog", PARTITIONS).start()
    assert tail.wait_caught_up()
    latest = {(m.key() or b"").decode(): m.value() or b"" for m in tail.stop()}
    return {key: notes_in(describe_state(json.loads(latest[key]))["memory"]) for key in KEYS}


def held_run_waits_on_its_last_call(state_dir: Path, app_id: str) -> bool:
    """The committed state of the held key: its run stands at the chat response, with the memory search's
    result in the journal of the action in flight."""
    found = inspect_key(state_dir, app_id, HELD_KEY)
    run = found["unfinished_run"] if found is not None else None
    return run is not None and run["input"]["seq"] == HELD_SEQ and len(run["journal"]) == 1 and \
        [event["type"].rsplit(":", 1)[-1] for event in run["pending_events"]] == ["ChatResponseEvent"]


def chat_calls(stub: StubLLMServer, key: str, seq: int) -> dict[str, int]:
    """Answered chat requests of one run: the first (asking for the tool) and the second (with its result)."""
    marker = call_texts(key, seq)["chat"] + ":"
    mine = [r for r in stub.requests
            if r["status"] == 200 and any(marker in str(m.get("content")) for m in r["messages"])]
    return {"first": sum(r["messages"][-1]["role"] == "user" for r in mine),
            "with_result": sum(r["messages"][-1]["role"] == "tool" for r in mine)}


def test_full_run_survives_sigkill_without_repeating_committed_calls(
        kafka, worker_factory, stub_llm: StubLLMServer, app_id: str, tmp_path: Path) -> None:
    kb = tmp_path / "kb"
    config = tmp_path / "agent.yaml"
    config.write_text("long-term-memory.embedding-model-setup: embeddings\nevent-log.level: STANDARD\n")
    call_log = tmp_path / "mcp-calls.log"
    held_note = call_texts(HELD_KEY, HELD_SEQ)["note"]

    with ExitStack() as stack:
        # The knowledge base loads while the MCP server starts and the broker creates the topics.
        with ThreadPoolExecutor(1) as loader:
            kb_loaded = loader.submit(load_kb, stub_llm.base_url, str(kb))
            calculator = stack.enter_context(running_server(free_port(), call_log))
            input_topic = kafka.new_topic("full-in", partitions=PARTITIONS)
            output_topic = kafka.new_topic("full-out", partitions=PARTITIONS)
            kb_loaded.result()

        def start(instance: str):  # noqa: ANN202 - a WorkerProcess
            return worker_factory(AGENT, input_topic, output_topic, app_id, instance_id=instance,
                                  state_dir=tmp_path / f"state-{instance}",
                                  env={KB_PATH_ENV: str(kb), "CALCULATOR_MCP_URL": calculator.endpoint},
                                  extra_args=["--agent-config", str(config), "--commit-interval-ms", "50"])

        outputs = TopicTail(kafka.bootstrap_servers, output_topic, PARTITIONS).start()
        try:
            first = start("a")
            first.wait_ready(min_partitions=PARTITIONS)
            stub_llm.embeddings.hold(held_note)
            kafka.produce(input_topic, [(key, json.dumps({"key": key, "seq": seq, "question": QUESTIONS[seq],
                                                          **dict(zip("ab", addends(key, seq)))}))
                                        for key, seq in INPUTS])
            # Every run but the held one and the one queued behind it on its key.
            assert wait_for(lambda: len(outputs) >= len(INPUTS) - 2, 60), first.log()
            assert wait_for(lambda: stub_llm.embeddings.held_count() == 1, 30), first.log()
            assert wait_for(lambda: held_run_waits_on_its_last_call(tmp_path / "state-a", app_id), 30), first.log()
            first.kill()
            # The held request dies with the worker's connection, unanswered; only then open the gate.
            assert wait_for(lambda: stub_llm.embeddings.held_count() == 0, 10)
            stub_llm.embeddings.release()
            committed_at_kill = committed_notes(kafka.bootstrap_servers, app_id)

            second = start("b")  # an empty state dir: every key comes back from the changelog
            assert wait_for(lambda: len(outputs) >= len(INPUTS), 60), second.log()
            assert second.metric("agentfleet_restore_records_total") >= len(KEYS)
            assert second.terminate() == 0, second.log()
            assert outputs.wait_caught_up(), "output tail did not catch up"  # a duplicate would be read by now
        finally:
            outputs.stop()

    # Every input has exactly one output.
    messages = outputs.records
    values = [json.loads(m.value() or b"") for m in messages]
    assert sorted((v["key"], v["seq"]) for v in values) == sorted(INPUTS)
    for v in values:
        key, seq = v["key"], v["seq"]
        assert v["docs"] == [EXPECTED_DOCS[seq]], v
        assert sorted(v["recalled"]) == [call_texts(key, s)["note"] for s in range(seq)], v
        assert json.loads(v["answer"]) == {"result": sum(addends(key, seq))}, v
        assert v["notes"] == [call_texts(key, s)["note"] for s in range(seq + 1)], v

    # No committed call was made twice: every distinct request was answered exactly once.
    mcp_calls = Counter((call["a"], call["b"]) for call in map(json.loads, call_log.read_text().splitlines()))
    for key, seq in INPUTS:
        texts = call_texts(key, seq)
        embedded = {kind: stub_llm.embeddings.count(text) for kind, text in
                    (("recall", texts["recall"]), ("ask", f"{texts['ask']}: {QUESTIONS[seq]}"),
                     ("note", texts["note"]))}
        # A search of a still empty memory set makes no call.
        assert embedded == {"recall": int(seq > 0), "ask": 1, "note": 1}, (key, seq, embedded)
        assert chat_calls(stub_llm, key, seq) == {"first": 1, "with_result": 1}, (key, seq)
        assert mcp_calls[addends(key, seq)] == 1, (key, seq, mcp_calls)
    assert sum(mcp_calls.values()) == len(INPUTS) and stub_llm.request_count == 2 * len(INPUTS)

    # Memory sets: at the kill, the notes of the committed runs; restored and finished, every note once.
    assert committed_at_kill == {key: [call_texts(key, s)["note"] for s in range(HELD_SEQ if key == HELD_KEY
                                                                                  else ROUNDS)] for key in KEYS}
    for key in KEYS:
        assert notes_of(tmp_path / "state-b", app_id, key) == [call_texts(key, s)["note"] for s in range(ROUNDS)]

    offsets = {(v["key"], v["seq"]): header(m, "agentfleet.source.offset") for v, m in zip(values, messages)}
    check_event_log(kafka.bootstrap_servers, app_id, offsets)


def check_event_log(bootstrap: str, app_id: str, offsets: dict[tuple[str, int], str | None]) -> None:
    """``<app-id>-events`` holds each run once: every event, action and call of it once, one resume for the
    held run. ``offsets`` are the input offsets of the runs by (key, seq)."""
    tail = TopicTail(bootstrap, f"{app_id}-events", PARTITIONS).start()
    assert tail.wait_caught_up()
    by_run: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for message in tail.stop():
        record = json.loads(message.value() or b"")
        by_run.setdefault((record["key"], record["run"]), []).append(record)
    inputs = [r for entries in by_run.values() for r in entries
              if r["record"] == "event" and r["event_type"] == "InputEvent"]
    runs = {(i["event"]["input"]["key"], i["event"]["input"]["seq"]): (i["key"], i["run"]) for i in inputs}
    assert sorted(runs) == sorted(INPUTS) and len(by_run) == len(INPUTS)
    for (key, seq), run in runs.items():
        assert run == (key, f"p{offsets[key, seq]}")  # a run is named by its input's offset
        entries = by_run[run]
        kinds = Counter(r["record"] for r in entries)
        assert kinds.pop("run_resumed", 0) == int((key, seq) == (HELD_KEY, HELD_SEQ)), (key, seq, kinds)
        memory_calls = 2 if seq > 0 else 1  # the search of an empty set makes none
        assert kinds == {"run_started": 1, "event": 8, "action": 7, "llm_call": 2, "tool_call": 1,
                         "durable_call": 1 + memory_calls, "run_finished": 1}, (key, seq, kinds)
        assert Counter(r["event_type"] for r in entries if r["record"] == "event") == Counter(EVENTS)
        assert Counter(r["action"] for r in entries if r["record"] == "action") == Counter(ACTIONS)
        assert Counter(r["function"] for r in entries if r["record"] == "durable_call") == {
            "context_retrieval_action.<locals>.retrieve": 1, "LongTermMemory._aembed.<locals>.call": memory_calls}
        assert [r["tool"] for r in entries if r["record"] == "tool_call"] == ["add"]
        assert all(r["outcome"] == "ok" for r in entries if r["record"] in ("action", "run_finished"))

