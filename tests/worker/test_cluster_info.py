"""`topics list|describe` and `groups describe` against the broker: what an operator checks first."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.kafka_support import KafkaCluster, consumer_config

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def cli(kafka: KafkaCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker.cli", *args, "--bootstrap-servers", kafka.bootstrap_servers],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def test_topics_list_and_describe_show_partitions_offsets_and_configs(kafka: KafkaCluster) -> None:
    topic = kafka.new_topic("info", partitions=2, config={"cleanup.policy": "compact"})
    kafka.produce(topic, [(b"k", b"v")] * 3, partition=1)
    listed = cli(kafka, "topics", "list")
    assert listed.returncode == 0 and f"{topic}: 2 partitions" in listed.stdout.splitlines()
    assert not any(line.startswith("__") for line in listed.stdout.splitlines())
    described = cli(kafka, "topics", "describe", topic, "--json")
    assert described.returncode == 0, described.stderr
    info = json.loads(described.stdout)
    assert info["configs"]["cleanup.policy"] == "compact"
    assert [(p["partition"], p["start_offset"], p["end_offset"]) for p in info["partitions"]] == [(0, 0, 0), (1, 0, 3)]
    assert all(p["leader"] in p["isr"] for p in info["partitions"])
    assert cli(kafka, "topics", "describe", "no-such-topic").returncode == 1


def test_groups_describe_shows_members_committed_offsets_and_lag(kafka: KafkaCluster) -> None:
    topic = kafka.new_topic("group-info", partitions=2)
    kafka.produce(topic, [(b"k", b"v")] * 5, partition=0)
    kafka.produce(topic, [(b"k", b"v")] * 2, partition=1)
    group = f"info-{uuid.uuid4().hex[:8]}"
    consumer = Consumer(consumer_config(kafka.bootstrap_servers, group))
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, 3), TopicPartition(topic, 1, 2)], asynchronous=False)
        out = cli(kafka, "groups", "describe", group, "--json")
        assert out.returncode == 0, out.stderr
        info = json.loads(out.stdout)
        assert [(o["partition"], o["committed"], o["end"], o["lag"]) for o in info["offsets"]] == [
            (0, 3, 5, 2), (1, 2, 2, 0)]
        assert info["total_lag"] == 2 and info["members"] == []
        text = cli(kafka, "groups", "describe", group)
        assert text.stdout.startswith(f"group {group}: ") and "lag 2" in text.stdout.splitlines()[0]
    finally:
        consumer.close()
