"""Issue 6, deliverable 2: every fault the stub model can inject, through one running worker.

Transient faults (429 with Retry-After, 500/503 bursts longer than the chat action's own retries,
hung requests, dropped connections, latency spikes past the client timeout, an outage) back off and
retry: one output, nothing dead-lettered, intake paused while the window is full. Answers that cannot
become a result (malformed or schema-invalid structured output after the repair attempt, a model that
never stops calling tools) dead-letter the run with the reason. The worker never exits. The
outage's no-loss/no-DLQ case with per-key counts is test_bad_input_and_outage.py; engine-level
behaviour (backoff arithmetic, repair prompts, tool rounds) is tests/agentplan/test_builtin_actions.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from agentplan.testing.llm_stub import MALFORMED_CONTENT, StubLLMServer
from tests.worker.integration.harness import TopicTail, WorkerProcess, header, serving, wait_for

pytestmark = pytest.mark.integration

PARTITIONS = 2
MAX_INFLIGHT = 16
VERDICT = '[[json {"label": "ok", "score": 1.0}]]'


@dataclass
class Rig:
    kafka: object
    stub: StubLLMServer
    worker: WorkerProcess
    input_topic: str
    outputs: TopicTail
    dlq: TopicTail

    def send(self, prompt: str, structured: bool = False) -> tuple[int, int]:
        """Produce one input with a fresh key; returns its (partition, offset)."""
        key = uuid.uuid4().hex[:8]
        (report,) = self.kafka.produce(self.input_topic, [(key, json.dumps(
            {"key": key, "prompt": prompt, "structured": structured}))])
        return report.partition(), report.offset()

    def result(self, source: tuple[int, int], timeout_s: float = 30) -> tuple[list, list]:
        """Wait for the input's output or DLQ record; returns (outputs, dlq records) for it."""
        assert wait_for(lambda: self.outputs.from_source(*source) or self.dlq.from_source(*source), timeout_s), \
            self.worker.log()
        assert self.worker.running(), self.worker.log()
        return self.outputs.from_source(*source), self.dlq.from_source(*source)

    def retries(self, kind: str | None = None) -> float:
        """agentfleet_transient_retries_total, of one kind or all."""
        _status, body = self.worker.http("/metrics")
        return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                   if line.startswith("agentfleet_transient_retries_total")
                   and (kind is None or f'kind="{kind}"' in line))


@pytest.fixture(scope="module")
def rig(kafka, tmp_path_factory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("llm-faults")
    input_topic = kafka.new_topic("faults-in", partitions=PARTITIONS)
    output_topic = kafka.new_topic("faults-out", partitions=PARTITIONS)
    with StubLLMServer(retry_after_s=0.3) as stub:
        worker = WorkerProcess(kafka.bootstrap_servers, "tests.worker.integration.agents:FaultProbeAgent",
                               input_topic, output_topic, f"app-{uuid.uuid4().hex[:8]}", tmp / "state", "faults", tmp,
                               env={"OPENAI_BASE_URL": stub.base_url, "OPENAI_API_KEY": "test",
                                    "AGENTPLAN_RETRY_BACKOFF_S": "0.05", "AGENTPLAN_RETRY_BACKOFF_MAX_S": "0.5",
                                    "AGENTPLAN_MAX_TOOL_CALL_ROUNDS": "3"},
                               extra_args=["--max-inflight", str(MAX_INFLIGHT)]).start()
        with serving(worker, kafka.bootstrap_servers, input_topic, output_topic, PARTITIONS) as (outputs, dlq):
            yield Rig(kafka, stub, worker, input_topic, outputs, dlq)


@pytest.mark.parametrize("fault,count,kind", [
    ("429", 2, "rate_limit"),
    ("500", 6, "http_500"),  # more than max_retries (3): the engine retries the action after the chat call gives up
    ("503", 6, "http_503"),
    ("timeout", 1, "timeout"),  # the stub hangs; the 1 s client timeout fires
    ("disconnect", 2, "connection"),
])
def test_transient_fault_is_retried_until_one_output(rig: Rig, fault: str, count: int, kind: str) -> None:
    retries_before = rig.retries(kind)
    rig.stub.clear_log()
    rig.stub.fail_next(count, fault)
    outputs, dead = rig.result(rig.send("say hello"))
    assert dead == [] and len(outputs) == 1
    assert json.loads(outputs[0].value())["answer"] == "echo: say hello"
    faults = [r["fault"] for r in rig.stub.requests]
    assert faults == [fault] * count + [None], faults
    assert rig.retries(kind) - retries_before >= count


def test_latency_spike_past_the_client_timeout_is_retried_until_it_passes(rig: Rig) -> None:
    before = rig.retries("timeout")
    rig.stub.set_latency(1500)
    try:
        source = rig.send("slow hello")
        assert wait_for(lambda: rig.retries("timeout") - before >= 2, 30), rig.worker.log()
        assert rig.outputs.from_source(*source) == [] and rig.dlq.from_source(*source) == []
    finally:
        rig.stub.set_latency(0)
    outputs, dead = rig.result(source)
    assert dead == [] and len(outputs) == 1


def test_latency_spike_below_the_timeout_delays_but_loses_nothing(rig: Rig) -> None:
    before = rig.retries()
    rig.stub.set_latency(400)
    try:
        sources = [rig.send(f"spike {i}") for i in range(10)]
        results = [rig.result(source) for source in sources]
    finally:
        rig.stub.set_latency(0)
    assert all(dead == [] and len(outputs) == 1 for outputs, dead in results)
    assert rig.retries() == before


def test_outage_pauses_intake_at_the_in_flight_bound_and_loses_nothing(rig: Rig) -> None:
    records_before = rig.worker.metric("agentfleet_records_in_total")
    with rig.stub.outage():
        sources = [rig.send(f"outage {i}") for i in range(3 * MAX_INFLIGHT)]
        assert wait_for(lambda: rig.worker.metric("agentfleet_paused_partitions") > 0, 30), rig.worker.log()
        assert rig.worker.metric("agentfleet_records_in_total") - records_before <= MAX_INFLIGHT
        assert rig.worker.metric("agentfleet_inflight_records") <= MAX_INFLIGHT
        assert all(rig.outputs.from_source(*s) == [] for s in sources)
    results = [rig.result(source) for source in sources]
    assert all(dead == [] and len(outputs) == 1 for outputs, dead in results)


def test_malformed_structured_output_once_is_repaired(rig: Rig) -> None:
    rig.stub.clear_log()
    rig.stub.fail_next(1, "malformed_json")
    outputs, dead = rig.result(rig.send(VERDICT, structured=True))
    assert dead == [] and len(outputs) == 1
    assert json.loads(outputs[0].value())["structured"] == {"label": "ok", "score": 1.0}
    assert rig.stub.request_count == 2  # the malformed answer and the re-ask


def test_malformed_output_without_a_schema_is_passed_on_as_text(rig: Rig) -> None:
    rig.stub.fail_next(1, "malformed_json")
    outputs, dead = rig.result(rig.send("free text"))
    assert dead == [] and json.loads(outputs[0].value())["answer"] == MALFORMED_CONTENT


@pytest.mark.parametrize("prompt,faults,error", [
    (VERDICT, 2, "does not match the output schema"),  # malformed twice: the repair attempt fails too
    ('[[json {"label": "ok"}]]', 0, "does not match the output schema"),  # valid JSON, wrong shape
    ("[[tool-loop:lookup]]", 0, "max_tool_call_rounds=3"),
], ids=["malformed-json-persistent", "schema-invalid", "endless-tool-calls"])
def test_unusable_answer_dead_letters_the_run_with_the_reason(rig: Rig, prompt: str, faults: int, error: str) -> None:
    rig.stub.clear_log()
    rig.stub.fail_next(faults, "malformed_json")
    outputs, dead = rig.result(rig.send(prompt, structured=True))
    assert outputs == [] and len(dead) == 1
    assert header(dead[0], "agentfleet.dlq.reason") == "run-failed"
    assert error in header(dead[0], "agentfleet.dlq.error"), header(dead[0], "agentfleet.dlq.error")
    assert json.loads(dead[0].value())["prompt"] == prompt  # the input itself, for a replay
    if prompt.startswith("[[tool-loop"):
        assert rig.stub.request_count == 4  # the first call and one per allowed round
