"""Deliverables 4e (hostile input -> DLQ with reasons) and 4f (LLM outage -> no loss, no DLQ)."""

from __future__ import annotations

import json
import re

import pytest

from tests.worker.integration.harness import header, read_all, wait_for

pytestmark = pytest.mark.integration


def test_hostile_input_goes_to_dlq_with_reasons_and_worker_keeps_going(any_broker, worker_factory, app_id):
    kafka = any_broker  # smoke: on the session broker and on embedded Tansu
    input_topic = kafka.new_topic("hostile-in", partitions=2)
    output_topic = kafka.new_topic("hostile-out", partitions=2)
    worker = worker_factory("tests.worker.integration.agents:PoisonAgent", input_topic, output_topic, app_id,
                            env={"AGENTFLEET_MAX_RECORD_BYTES": "10000"})
    worker.wait_ready(min_partitions=2)
    deep = "[" * 200 + "]" * 200
    bad = [
        ("a", b"not json at all", "invalid-json"),
        ("b", b"\xff\xfe\xfa", "invalid-utf8"),
        ("c", b"", "empty"),
        ("d", json.dumps({"x": "y" * 20_000}).encode(), "oversized"),
        (None, json.dumps({"ok": 1}).encode(), "null-key"),
        ("e", deep.encode(), "too-deep"),
        ("f", json.dumps({"poison": True}).encode(), "run-failed"),
    ]
    good = [(f"g{i}", json.dumps({"n": i}).encode()) for i in range(5)]
    kafka.produce(input_topic, [(k, v) for k, v, _ in bad] + good)

    outputs = read_all(kafka.bootstrap_servers, output_topic, 2, expected=len(good))
    dlq = read_all(kafka.bootstrap_servers, f"{input_topic}-dlq", 2, expected=len(bad))
    assert sorted(json.loads(m.value())["n"] for m in outputs) == list(range(5)), worker.log()
    reasons = sorted(header(m, "agentfleet.dlq.reason") for m in dlq)
    assert reasons == sorted(r for _, _, r in bad), worker.log()
    for m in dlq:
        assert header(m, "agentfleet.dlq.error")
        assert len(header(m, "agentfleet.dlq.error")) <= 1024
        assert header(m, "agentfleet.source.offset") is not None
    assert worker.running()

    # All offsets committed: a worker of the same group that starts later reads nothing new.
    assert worker.terminate() == 0, worker.log()
    # Never silent: WARNING lines (rate-limited) name the DLQ topic and count every record by reason, with
    # an example's coordinates and key; by shutdown all 7 are reported.
    reports = [line for line in worker.log().splitlines() if "WARNING" in line and "dead-lettered" in line]
    assert reports and all(f" to {input_topic}-dlq (" in line for line in reports), worker.log()
    counted: dict[str, int] = {}
    for line in reports:
        for reason, n in re.findall(r"([a-z0-9-]+)=(\d+)", line.split(" (", 1)[1].split(")", 1)[0]):
            counted[reason] = counted.get(reason, 0) + int(n)
    assert counted == {r: 1 for _, _, r in bad}, reports
    assert re.search(rf"e\.g\. {input_topic}\[\d\]@\d+ key '[a-z]*': ", reports[0]), reports[0]
    second = worker_factory("tests.worker.integration.agents:PoisonAgent", input_topic, output_topic, app_id)
    second.wait_ready(min_partitions=2)
    kafka.produce(input_topic, [("z", json.dumps({"n": 99}).encode())])
    outputs = read_all(kafka.bootstrap_servers, output_topic, 2, expected=len(good) + 1)
    assert len(outputs) == len(good) + 1
    assert second.metric("agentfleet_records_in_total") == 1, second.log()
    assert second.terminate() == 0


def test_llm_outage_loses_nothing_and_dead_letters_nothing(kafka, worker_factory, app_id, stub_llm):
    input_topic = kafka.new_topic("outage-in", partitions=2)
    output_topic = kafka.new_topic("outage-out", partitions=2)
    worker = worker_factory("tests.worker.integration.agents:CountingAgent", input_topic, output_topic, app_id,
                            env={"AGENTPLAN_RETRY_BACKOFF_S": "0.05", "AGENTPLAN_RETRY_BACKOFF_MAX_S": "0.5"})
    worker.wait_ready(min_partitions=2)
    stub_llm.fail_next(5, "503")
    with stub_llm.outage():
        kafka.produce(input_topic, [(f"k{i % 5}", json.dumps({"key": f"k{i % 5}", "seq": i // 5}))
                                    for i in range(20)])
        # The worker is retrying against a refused port: wait until it has tried and backed off.
        deadline_ok = wait_for(lambda: worker.metric("agentfleet_transient_retries_total") >= 3)
        assert deadline_ok, worker.log()
        assert read_all(kafka.bootstrap_servers, output_topic, 2, expected=1, timeout_s=1) == []
    outputs = read_all(kafka.bootstrap_servers, output_topic, 2, expected=20)
    assert len(outputs) == 20, worker.log()
    dlq = read_all(kafka.bootstrap_servers, f"{input_topic}-dlq", 2, expected=1, timeout_s=2)
    assert dlq == []
    by_key = {}
    for m in outputs:
        v = json.loads(m.value())
        by_key.setdefault(v["key"], []).append((v["seq"], v["count"]))
    assert all(entries == [(s, s + 1) for s in range(4)] for entries in by_key.values()), by_key
    assert worker.terminate() == 0

