"""Input records deleted while the worker was stopped: it resumes at the log start, says so and counts them.

DeleteRecords moves a partition's log start offset past the group's committed offset now, which is
what retention does once the stopped group's records age out: deterministic, no waiting for segments
to roll and expire. The worker finds the gap at assignment (worker/kafka/retention.py); librdkafka
itself resets to the earliest offset (auto.offset.reset=earliest) without reporting how much it skipped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.kafka_support import KafkaCluster
from tests.worker.integration.harness import WorkerProcess, counted_round, produce_round, read_all, wait_for
from tests.worker.integration.topic_probe import admin_client, committed_offsets, delete_records_before, end_offsets

pytestmark = pytest.mark.integration

AGENT = "tests.worker.integration.agents:CountingAgent"
PARTITIONS = 2
KEYS = [f"k{i}" for i in range(6)]
LOST_METRIC = "agentfleet_records_lost_to_retention_total"


def test_records_deleted_before_the_group_read_them_are_skipped_logged_and_counted(
        kafka: KafkaCluster, worker_factory, app_id: str, tmp_path: Path):
    if not kafka.hides_aborted:
        pytest.skip("needs Apache Kafka's DeleteRecords and log start offsets; the session broker is Tansu")
    admin = admin_client(kafka.bootstrap_servers)
    input_topic = kafka.new_topic("retention-in", partitions=PARTITIONS)
    output_topic = kafka.new_topic("retention-out", partitions=PARTITIONS)

    def start() -> WorkerProcess:
        """The worker, (re)started on its own state directory, once it holds every partition."""
        started = worker_factory(AGENT, input_topic, output_topic, app_id, instance_id="r", state_dir=tmp_path / "s")
        started.wait_ready(min_partitions=PARTITIONS)
        return started

    worker = start()
    counted_round(kafka, input_topic, output_topic, PARTITIONS, KEYS, 0, worker)
    assert worker.terminate() == 0, worker.log()
    first_log = worker.log()
    committed = committed_offsets(admin, app_id, input_topic, PARTITIONS)

    # Rounds 1 and 2 arrive while the worker is stopped and are deleted before it returns; round 3 stays.
    produce_round(kafka, input_topic, KEYS, 1)
    produce_round(kafka, input_topic, KEYS, 2)
    log_start = delete_records_before(admin, input_topic, end_offsets(admin, input_topic, PARTITIONS))
    produce_round(kafka, input_topic, KEYS, 3)
    lost = {p: log_start[p] - committed[p] for p in range(PARTITIONS)}
    assert sum(lost.values()) == 2 * len(KEYS)

    worker = start()
    outputs = read_all(kafka.bootstrap_servers, output_topic, PARTITIONS, expected=2 * len(KEYS))
    assert len(outputs) == 2 * len(KEYS), worker.log()  # no hang at the out-of-range offset
    # Round 3 was read, rounds 1 and 2 never were: the counts go on from round 0.
    values = [json.loads(m.value() or b"") for m in outputs]
    after = sorted((v["key"], v["seq"], v["count"]) for v in values if v["seq"] > 0)
    assert after == sorted((key, 3, 2) for key in KEYS)

    assert wait_for(lambda: worker.metric(LOST_METRIC) == sum(lost.values()), timeout_s=10), worker.log()
    log = worker.log()
    for partition, count in lost.items():
        if count:
            line = (rf"WARNING .*input partition {re.escape(input_topic)}\[{partition}\]: committed offset "
                    rf"{committed[partition]} is below the log start offset {log_start[partition]}; {count} "
                    rf"records were deleted by retention .* Resuming from offset {log_start[partition]}")
            assert re.search(line, log), log
    assert worker.terminate() == 0, log
    # A first start (no committed offset) and a plain restart report nothing.
    assert "below the log start offset" not in first_log
