"""Durable approvals on Apache Kafka: parked runs across workers, SIGKILLs while parked and while decisions
arrive; every decision resumes its run exactly once (read_committed), each request is published once,
a key's later record waits for its decision, and an undecided request times out.

The issue's acceptance size is 1,000 parked runs on 3 workers with 2 SIGKILLed:
``AGENTFLEET_APPROVALS_FULL=1 pytest tests/worker/integration/test_approvals.py``. CI runs 100 on 2.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from typer.testing import CliRunner

from tests.worker.integration.harness import TopicTail, wait_for
from worker.approval_commands import pending_requests
from worker.approvals import decision_record
from worker.cli import app

pytestmark = pytest.mark.integration

AGENT = "tests.worker.integration.agents:ApprovalAgent"
PARTITIONS = 6
FULL = os.environ.get("AGENTFLEET_APPROVALS_FULL") == "1"


def read_to_end(bootstrap: str, topic: str, partitions: int) -> list[Any]:
    tail = TopicTail(bootstrap, topic, partitions).start()
    try:
        assert tail.wait_caught_up(30)
    finally:
        records = tail.stop()
    return records


def pending(kafka: Any, app_id: str, expected: int, keys: set[str] | None = None) -> list[dict[str, Any]]:
    """Wait until ``expected`` requests (of ``keys``, if given) are pending."""
    found: list[dict[str, Any]] = []

    def enough() -> bool:
        listed = pending_requests(kafka.bootstrap_servers, app_id, {})
        found[:] = [r for r in listed if keys is None or r["key"] in keys]
        return len(found) >= expected

    assert wait_for(enough, 120, interval_s=0.5), f"{len(found)} of {expected} requests published"
    return found


@pytest.mark.parametrize(("runs", "workers", "kills"), [
    pytest.param(100, 2, 1, id="100-runs-2-workers"),
    pytest.param(1000, 3, 2, id="1000-runs-3-workers", marks=pytest.mark.skipif(
        not FULL, reason="acceptance size: set AGENTFLEET_APPROVALS_FULL=1")),
])
def test_every_decision_resumes_its_parked_run_exactly_once(kafka, worker_factory, app_id, tmp_path, runs,
                                                            workers, kills):
    input_topic = kafka.new_topic("approve-in", partitions=PARTITIONS)
    output_topic = kafka.new_topic("approve-out", partitions=PARTITIONS)
    keys = [f"k{i}" for i in range(runs)]
    followers = keys[:: 10]  # keys with a second record, which must wait behind the parked run
    started = time.monotonic()
    fleet = [worker_factory(AGENT, input_topic, output_topic, app_id, instance_id=f"w{i}", extra_args=["--approvals"])
             for i in range(workers)]
    for worker in fleet:
        worker.wait_ready()
    outputs = TopicTail(kafka.bootstrap_servers, output_topic, PARTITIONS).start()
    try:
        kafka.produce(input_topic, [(k, json.dumps({"key": k, "seq": 0})) for k in keys]
                      + [("late", json.dumps({"key": "late", "seq": 0, "timeout_s": 3}))]
                      + [(k, json.dumps({"key": k, "seq": 1, "plain": True})) for k in followers])
        requests = pending(kafka, app_id, runs, set(keys))  # "late" may have timed out already
        parked_at = time.monotonic()
        # Every run parked, and the followers wait behind theirs; only "late" may have timed out by now.
        assert {json.loads(m.value())["key"] for m in outputs.records} <= {"late"}
        fleet[0].kill()  # while parked: its partitions' runs resume waiting on the others, from the changelog

        by_key = {r["key"]: r for r in requests}
        assert sorted(by_key) == sorted(keys)
        # Decisions go where the CLI puts them: the request's key, on its partition (the CLI is tried below).
        half = runs // 2
        decide = [(k, i % 2 == 0) for i, k in enumerate(keys)]
        for batch in (decide[:half], decide[half:]):
            by_partition: dict[int, list[tuple[str, str]]] = {}
            for key, approved in batch:
                record = decision_record(by_key[key]["request_id"], approved, "test").decode()
                by_partition.setdefault(by_key[key]["partition"], []).append((key, record))
            for partition, decisions in by_partition.items():
                kafka.produce(f"{app_id}-decisions", decisions, partition=partition)
            if kills > 1 and batch is decide[:half]:
                assert wait_for(lambda: len(outputs) >= half // 2, 120)
                fleet[1].kill()  # while decisions are being applied
        expected = runs + len(followers) + 1  # decisions, followers, the timeout
        assert wait_for(lambda: len(outputs) >= expected, 180), "".join(w.log() for w in fleet[kills:])
        resumed_in = time.monotonic() - parked_at
        for worker in fleet[kills:]:
            assert worker.terminate() == 0, worker.log()
        assert outputs.wait_caught_up(30)
    finally:
        records = outputs.stop()

    values = [json.loads(m.value()) for m in records]
    duplicates = {k: n for k, n in Counter((v["key"], v["seq"]) for v in values).items() if n > 1}
    assert duplicates == {}
    assert len(values) == expected
    results = {v["key"]: v for v in values if v["seq"] == 0}
    for i, key in enumerate(keys):
        assert results[key]["approved"] is (i % 2 == 0) and results[key]["by"] == "test", results[key]
        assert results[key]["request_id"] == by_key[key]["request_id"]
    assert results["late"].get("timeout") is True
    order = [(v["key"], v["seq"]) for v in values if v["key"] in set(followers)]
    for key in followers:  # per key, the later record came out after its parked run's decision
        assert [s for k, s in order if k == key] == [0, 1]
    # Each request was published once, however often its run was replayed.
    published = Counter(json.loads(m.value())["request_id"] for m in read_to_end(
        kafka.bootstrap_servers, f"{app_id}-approvals", PARTITIONS))
    assert len(published) == runs + 1 and set(published.values()) == {1}
    assert pending_requests(kafka.bootstrap_servers, app_id, {}) == []
    print(f"\n{runs} parked runs on {workers} workers, {kills} SIGKILLed: all parked after "
          f"{parked_at - started:.1f}s, all resumed {resumed_in:.1f}s after the first kill")


def test_operator_commands_list_approve_and_reject(kafka, worker_factory, app_id):
    input_topic = kafka.new_topic("approve-in", partitions=2)
    output_topic = kafka.new_topic("approve-out", partitions=2)
    worker = worker_factory(AGENT, input_topic, output_topic, app_id, extra_args=["--approvals"])
    worker.wait_ready()
    outputs = TopicTail(kafka.bootstrap_servers, output_topic, 2).start()
    runner = CliRunner()
    common = ["--app-id", app_id, "--bootstrap-servers", kafka.bootstrap_servers]
    try:
        kafka.produce(input_topic, [(k, json.dumps({"key": k, "seq": 0})) for k in ("yes", "no")])
        pending(kafka, app_id, 2)
        listed = runner.invoke(app, ["approvals", "list", *common])
        assert listed.exit_code == 0, listed.output
        requests = {r["key"]: r for r in map(json.loads, listed.output.splitlines())}
        assert {k: r["request"] for k, r in requests.items()} == {"yes": {"key": "yes", "seq": 0},
                                                                 "no": {"key": "no", "seq": 0}}
        approve = runner.invoke(app, ["approvals", "approve", requests["yes"]["request_id"], "--by", "ada", *common])
        assert approve.exit_code == 0 and "approved" in approve.output, approve.output
        reject = runner.invoke(app, ["approvals", "reject", requests["no"]["request_id"], *common])
        assert reject.exit_code == 0, reject.output
        again = runner.invoke(app, ["approvals", "approve", requests["no"]["request_id"], *common])
        assert again.exit_code == 2 and "no pending request" in again.output
        assert wait_for(lambda: len(outputs) >= 2, 60), worker.log()
        assert worker.terminate() == 0, worker.log()
    finally:
        records = outputs.stop()
    results = {v["key"]: (v["approved"], v["by"]) for v in (json.loads(m.value()) for m in records)}
    assert results == {"yes": (True, "ada"), "no": (False, "")}
    # The decisions' offsets were committed under the group, in the resumed runs' transactions.
    reader = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": app_id})
    try:
        committed = reader.committed([TopicPartition(f"{app_id}-decisions", p) for p in range(2)], timeout=10)
    finally:
        reader.close()
    decided = Counter(r["partition"] for r in requests.values())
    assert {tp.partition: tp.offset for tp in committed if tp.offset >= 0} == dict(decided)
    assert runner.invoke(app, ["approvals", "list", *common]).output == ""
