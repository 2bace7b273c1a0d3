"""Deliverable 4b: per-key state survives restarts, lost state dirs and partition moves."""

from __future__ import annotations

import shutil

import pytest

from tests.worker.integration.harness import assert_counts_continue, counted_round

pytestmark = pytest.mark.integration

AGENT = "tests.worker.integration.agents:CountingAgent"
PARTITIONS = 4
KEYS = [f"k{i}" for i in range(8)]


def test_counter_survives_restart_state_loss_and_partition_moves(kafka, worker_factory, app_id, tmp_path):
    input_topic = kafka.new_topic("count-in", partitions=PARTITIONS)
    output_topic = kafka.new_topic("count-out", partitions=PARTITIONS)
    state_a = tmp_path / "state-a"

    # Round 0 on worker A, then a graceful SIGTERM.
    a = worker_factory(AGENT, input_topic, output_topic, app_id, instance_id="a", state_dir=state_a)
    a.wait_ready(min_partitions=PARTITIONS)
    counted_round(kafka, input_topic, output_topic, PARTITIONS, KEYS, 0, a)
    assert a.terminate() == 0, a.log()

    # Round 1 after a restart with the same state dir: values continue.
    a = worker_factory(AGENT, input_topic, output_topic, app_id, instance_id="a", state_dir=state_a)
    a.wait_ready(min_partitions=PARTITIONS)
    counted_round(kafka, input_topic, output_topic, PARTITIONS, KEYS, 1, a)
    assert a.terminate() == 0, a.log()

    # Round 2 after deleting the state dir: restored from the changelog.
    shutil.rmtree(state_a)
    a = worker_factory(AGENT, input_topic, output_topic, app_id, instance_id="a", state_dir=state_a)
    a.wait_ready(min_partitions=PARTITIONS)
    assert a.metric("agentfleet_restore_records_total") >= len(KEYS)
    counted_round(kafka, input_topic, output_topic, PARTITIONS, KEYS, 2, a)

    # Round 3 while a second worker takes half the partitions (state moves with them).
    b = worker_factory(AGENT, input_topic, output_topic, app_id, instance_id="b", state_dir=tmp_path / "state-b")
    b.wait_ready(min_partitions=1)
    messages = counted_round(kafka, input_topic, output_topic, PARTITIONS, KEYS, 3, a, b)
    assert b.metric("agentfleet_records_out_total") > 0
    assert a.terminate() == 0 and b.terminate() == 0
    assert_counts_continue(messages, KEYS, rounds=4)
