"""Deliverable 4g: a slow LLM and a large backlog: in-flight stays at the bound, memory stays bounded."""

from __future__ import annotations

import json
import time

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.cluster import OutputCollector
from tests.worker.integration.harness import read_all

pytestmark = pytest.mark.integration


def test_backlog_with_slow_llm_is_bounded(kafka, worker_factory, app_id, stub_llm):
    partitions, records, limit = 4, 50_000, 400
    input_topic = kafka.new_topic("bp-in", partitions=partitions)
    output_topic = kafka.new_topic("bp-out", partitions=partitions)
    for start in range(0, records, 10_000):
        kafka.produce(input_topic, [(f"k{i % 5000}", json.dumps({"key": f"k{i % 5000}", "seq": i // 5000}))
                                    for i in range(start, start + 10_000)])
    stub_llm.set_latency(300)
    worker = worker_factory("tests.worker.integration.agents:CountingAgent", input_topic, output_topic, app_id,
                            extra_args=["--max-inflight", str(limit)])
    worker.wait_ready(min_partitions=partitions)
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    group = ConsumerGroupTopicPartitions(app_id, [TopicPartition(input_topic, p) for p in range(partitions)])

    def committed_offsets() -> int:
        """Input records below the group's committed offsets, from the broker (offsets start at 0)."""
        offsets = admin.list_consumer_group_offsets([group])[app_id].result(timeout=10)
        return sum(max(0, tp.offset) for tp in offsets.topic_partitions)

    # One output per record. This reader hands over each record as soon as it is fetched (TopicTail waits
    # up to 0.2 s to fill a batch, which would count that many committed records as uncommitted).
    outputs = OutputCollector(kafka.bootstrap_servers, output_topic, partitions)
    samples, uncommitted, counted, offset_lag, rss = [], [], [], [], []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        samples.append(worker.metric("agentfleet_inflight_records"))
        counted.append(worker.metric("agentfleet_uncommitted_records"))
        # Measured outside the worker: records it consumed minus records whose output is committed (read
        # committed). Intake is read first, so intake after it cannot inflate the figure.
        consumed = worker.metric("agentfleet_records_in_total")
        committed = len(outputs.outputs)
        offsets = committed_offsets()
        uncommitted.append(consumed - committed)
        offset_lag.append(consumed - offsets)
        rss.append(worker.rss_mb())
        time.sleep(0.25)
    outputs.close()
    assert max(samples) <= limit, (max(samples), worker.log())
    # --max-inflight bounds the records running; finished ones wait for their checkpoint, bounded apart.
    assert max(counted) <= 2 * limit, (max(counted), counted)
    # The same bound seen from outside, at every sample.
    assert max(uncommitted) <= 2 * limit, uncommitted
    # The committed offsets wait for each partition's oldest record, so they lag further: records
    # committed past it are skipped by their keys' progress after a restart.
    print(f"uncommitted: counted max {max(counted):.0f}, outside max {max(uncommitted):.0f}, committed-offset lag "
          f"max {max(offset_lag):.0f}, limit {limit}")
    assert max(samples) >= limit * 0.5, samples  # it does fill the window against a slow model
    assert worker.metric("agentfleet_records_in_total") < records  # the backlog stays in Kafka
    assert max(rss) < 400, rss
    # The second half of the window does not keep growing: memory is bounded, not leaking per record.
    half = len(rss) // 2
    assert max(rss[half:]) < max(rss[:half]) + 40, rss
    # SIGTERM with a full window drains in-flight runs, commits them and exits cleanly.
    stub_llm.set_latency(0)
    assert worker.terminate() == 0, worker.log()
    outputs = read_all(kafka.bootstrap_servers, output_topic, partitions, expected=records, timeout_s=5)
    assert 0 < len(outputs) < records
    seen = {(json.loads(m.value())["key"], json.loads(m.value())["seq"]) for m in outputs}
    assert len(seen) == len(outputs)  # no duplicates on the graceful path
