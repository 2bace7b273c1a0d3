"""Deliverable 4b: per-key state survives restarts, lost state dirs and partition moves."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.worker.integration.harness import read_all

pytestmark = pytest.mark.integration

AGENT = "tests.worker.integration.agents:CountingAgent"
PARTITIONS = 4
KEYS = [f"k{i}" for i in range(8)]


def produce_round(kafka, topic, round_no):
    kafka.produce(topic, [(k, json.dumps({"key": k, "seq": round_no})) for k in KEYS])


def counts_by_key(messages):
    out = {}
    for m in messages:
        value = json.loads(m.value())
        out.setdefault(value["key"], []).append((value["seq"], value["count"]))
    return out


def assert_counts(messages, rounds):
    by_key = counts_by_key(messages)
    assert sorted(by_key) == sorted(KEYS)
    for key, entries in by_key.items():
        assert entries == [(r, r + 1) for r in range(rounds)], (key, entries)


def test_counter_survives_restart_state_loss_and_partition_moves(kafka, worker_factory, app_id, tmp_path):
    input_topic = kafka.new_topic("count-in", partitions=PARTITIONS)
    output_topic = kafka.new_topic("count-out", partitions=PARTITIONS)
    state_a = tmp_path / "state-a"

    # Round 0 on worker A, then a graceful SIGTERM.
    a = worker_factory(AGENT, input_topic, output_topic, app_id, instance_id="a", state_dir=state_a)
    a.wait_ready(min_partitions=PARTITIONS)
    produce_round(kafka, input_topic, 0)
    assert len(read_all(kafka.bootstrap_servers, output_topic, PARTITIONS, expected=8)) == 8, a.log()
    assert a.terminate() == 0, a.log()

    # Round 1 after a restart with the same state dir: values continue.
    a = worker_factory(AGENT, input_topic, output_topic, app_id, instance_id="a", state_dir=state_a)
    a.wait_ready(min_partitions=PARTITIONS)
    produce_round(kafka, input_topic, 1)
    assert len(read_all(kafka.bootstrap_servers, output_topic, PARTITIONS, expected=16)) == 16, a.log()
    assert a.terminate() == 0, a.log()

    # Round 2 after deleting the state dir: restored from the changelog.
    shutil.rmtree(state_a)
    a = worker_factory(AGENT, input_topic, output_topic, app_id, instance_id="a", state_dir=state_a)
    a.wait_ready(min_partitions=PARTITIONS)
    assert a.metric("agentfleet_restore_records_total") >= len(KEYS)
    produce_round(kafka, input_topic, 2)
    assert len(read_all(kafka.bootstrap_servers, output_topic, PARTITIONS, expected=24)) == 24, a.log()

    # Round 3 while a second worker takes half the partitions (state moves with them).
    b = worker_factory(AGENT, input_topic, output_topic, app_id, instance_id="b", state_dir=tmp_path / "state-b")
    b.wait_ready(min_partitions=1)
    produce_round(kafka, input_topic, 3)
    messages = read_all(kafka.bootstrap_servers, output_topic, PARTITIONS, expected=32)
    assert len(messages) == 32, a.log() + b.log()
    assert b.metric("agentfleet_records_out_total") > 0
    assert a.terminate() == 0 and b.terminate() == 0
    assert_counts(messages, rounds=4)
