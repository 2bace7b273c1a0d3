"""The event log and traces on real workers over Kafka: W3C trace context from input to outputs with spans
received by an OTLP receiver, and the event-log topic holding each committed run once across a SIGKILL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.worker.integration.harness import (
    REPO,
    TopicTail,
    assert_counts_continue,
    header,
    read_all,
    wait_for,
)
from tests.worker.integration.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.integration

AGENT = "tests.worker.integration.agents:CountingAgent"


def traceparent(trace_id: str, span_id: str) -> bytes:
    return f"00-{trace_id}-{span_id}-01".encode()


def test_trace_context_crosses_the_worker_and_spans_reach_an_otlp_receiver(kafka, worker_factory, app_id):
    input_topic = kafka.new_topic("otel-in", partitions=2)
    output_topic = kafka.new_topic("otel-out", partitions=2)
    with OtlpReceiver() as receiver:
        otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        worker = worker_factory(AGENT, input_topic, output_topic, app_id, env=otel)
        worker.wait_ready(min_partitions=2)
        parents = {f"k{i}": (f"{i + 1:032x}", f"{i + 0xA0:016x}") for i in range(3)}
        traced = [(k, json.dumps({"key": k, "seq": 0}), [("traceparent", traceparent(*ids))])
                  for k, ids in parents.items()]
        kafka.produce(input_topic, [*traced, ("plain", json.dumps({"key": "plain", "seq": 0}))])
        outputs = {json.loads(m.value())["key"]: m for m in read_all(kafka.bootstrap_servers, output_topic, 2, 4)}
        assert sorted(outputs) == ["k0", "k1", "k2", "plain"], worker.log()

        for key, (trace_id, parent_id) in parents.items():
            carried = header(outputs[key], "traceparent")
            assert carried is not None and carried.split("-")[1] == trace_id, carried
            run_span_id = carried.split("-")[2]
            assert run_span_id != parent_id  # the run's span is the outputs' parent

            def complete(trace_id: str = trace_id) -> bool:
                names = [s.name.split(" ")[0] for s in receiver.trace(trace_id)]
                return {"invoke_agent", "chat", "agentfleet.commit"} <= set(names)

            assert receiver.wait_for(complete), (receiver.trace(trace_id), worker.log())
            spans = receiver.trace(trace_id)
            (run,) = [s for s in spans if s.name == "invoke_agent CountingAgent"]
            assert (run.span_id, run.parent_span_id) == (run_span_id, parent_id)
            assert run.attributes["messaging.destination.name"] == input_topic
            assert run.attributes["agentfleet.key"] == key and run.service_name == app_id
            actions = {s.span_id: s for s in spans if s.name.startswith("action ")}
            assert sorted(s.name for s in actions.values()) == ["action ask", "action chat_model_action",
                                                                "action count"]
            assert all(s.parent_span_id == run.span_id for s in actions.values())
            (chat,) = [s for s in spans if s.name.startswith("chat ")]
            assert actions[chat.parent_span_id].name == "action chat_model_action"
            assert chat.attributes["gen_ai.operation.name"] == "chat"
            assert chat.attributes["gen_ai.request.model"] == "stub"
            assert chat.attributes["gen_ai.usage.input_tokens"] > 0
            assert chat.attributes["gen_ai.usage.output_tokens"] > 0
            assert chat.attributes["gen_ai.response.finish_reasons"] == ("stop",)
            (commit,) = [s for s in spans if s.name == "agentfleet.commit"]
            assert commit.parent_span_id == run.span_id

        # An input without a trace context starts a trace; its output carries it on.
        carried = header(outputs["plain"], "traceparent")
        assert carried is not None
        new_trace = carried.split("-")[1]
        assert receiver.wait_for(lambda: any(s.name.startswith("chat ") for s in receiver.trace(new_trace)))
        (root,) = [s for s in receiver.trace(new_trace) if s.name.startswith("invoke_agent")]
        assert root.parent_span_id == ""
        assert worker.terminate() == 0, worker.log()


def test_event_log_topic_holds_each_committed_run_once_across_a_sigkill(kafka, worker_factory, app_id, stub_llm,
                                                                        tmp_path: Path):
    partitions, keys, rounds = 2, [f"user-{i}" for i in range(6)], 8
    input_topic = kafka.new_topic("evlog-in", partitions=partitions)
    output_topic = kafka.new_topic("evlog-out", partitions=partitions)
    config = tmp_path / "agent.yaml"
    config.write_text("event-log.level: STANDARD\n")
    stub_llm.set_latency(150)  # runs wait on the model: the kill lands while some are half done
    state = tmp_path / "state"

    def start():
        return worker_factory(AGENT, input_topic, output_topic, app_id, instance_id="a", state_dir=state,
                              extra_args=["--agent-config", str(config), "--commit-interval-ms", "50"])

    outputs = TopicTail(kafka.bootstrap_servers, output_topic, partitions).start()
    try:
        worker = start()
        worker.wait_ready(min_partitions=partitions)
        kafka.produce(input_topic, [(k, json.dumps({"key": k, "seq": r})) for r in range(rounds) for k in keys])
        assert wait_for(lambda: len(outputs) >= 2 * len(keys), 60), worker.log()
        worker.kill()
        worker = start()
        assert wait_for(lambda: len(outputs) >= rounds * len(keys), 90), worker.log()
        assert worker.terminate() == 0, worker.log()
        assert outputs.wait_caught_up()
        assert_counts_continue(outputs.stop(), keys, rounds)
    finally:
        outputs.stop()

    events_topic = f"{app_id}-events"
    tail = TopicTail(kafka.bootstrap_servers, events_topic, partitions).start()
    assert tail.wait_caught_up()
    records = [(m.key().decode(), m.partition(), json.loads(m.value())) for m in tail.stop()]
    assert {key for key, _p, r in records} == set(keys)
    assert all(r["key"] == key for key, _p, r in records)
    by_run: dict[tuple[str, str], list[dict]] = {}
    for key, _partition, record in records:
        by_run.setdefault((key, record["run"]), []).append(record)
    assert len(by_run) == rounds * len(keys)  # one run per input record, named by its offset
    resumed = 0
    for (key, run), entries in by_run.items():
        kinds = Counter(r["record"] for r in entries)
        resumed += kinds.pop("run_resumed", 0)
        expected = {"run_started": 1, "event": 4, "action": 3, "llm_call": 1, "run_finished": 1}
        assert kinds == expected, (key, run, entries)
        assert Counter(r["event_type"] for r in entries if r["record"] == "event") == {
            "InputEvent": 1, "ChatRequestEvent": 1, "ChatResponseEvent": 1, "OutputEvent": 1}
        assert sorted(r["action"] for r in entries if r["record"] == "action") == ["ask", "chat_model_action", "count"]
        assert all(r["outcome"] == "ok" for r in entries if r["record"] in ("action", "run_finished"))
        (llm,) = [r for r in entries if r["record"] == "llm_call"]
        assert llm["input_tokens"] > 0 and llm["model"] == "stub"
    # The kill interrupted runs whose first steps had committed: they resumed, and were logged once.
    assert resumed >= 1

    # `agentfleet trace KEY` reads the same topic (read_committed) and draws the key's runs.
    shown = subprocess.run([sys.executable, "-m", "worker.cli", "trace", keys[0], "--app-id", app_id,
                            "--bootstrap-servers", kafka.bootstrap_servers], cwd=REPO, capture_output=True,
                           text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0] == f"key '{keys[0]}': {rounds} runs"
    assert shown.stdout.count("  ok  ") == rounds
    assert shown.stdout.count("llm stub") == rounds
