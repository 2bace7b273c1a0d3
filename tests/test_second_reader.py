"""The independent reader really filters aborted transactions, so the exactly-once tests can rely on it."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer

from tests.kafka_support import KafkaCluster, producer_config
from tests.second_reader import read_topic_to_end

pytestmark = pytest.mark.integration


def test_kafka_python_reader_skips_aborted_records_and_sees_committed_ones(kafka: KafkaCluster) -> None:
    if not kafka.hides_aborted:
        pytest.skip("the embedded Tansu broker serves aborted records to every reader (BROKER.md)")
    topic = kafka.new_topic("second-reader", partitions=2)
    producer = Producer(producer_config(kafka.bootstrap_servers, transactional_id=f"sr-{uuid.uuid4().hex[:8]}"))
    producer.init_transactions(10)
    for outcome in ("commit", "abort", "commit"):
        producer.begin_transaction()
        for p in range(2):
            producer.produce(topic, key=b"k", value=f"{outcome}-{p}".encode(), partition=p)
        assert producer.flush(10) == 0  # the aborted records reach the log, so skipping them is real
        if outcome == "commit":
            producer.commit_transaction(10)
        else:
            producer.abort_transaction(10)

    committed = read_topic_to_end(kafka.bootstrap_servers, topic)
    uncommitted = read_topic_to_end(kafka.bootstrap_servers, topic, isolation="read_uncommitted")

    assert [r.value for r in committed] == [b"commit-0", b"commit-0", b"commit-1", b"commit-1"]
    assert sorted(r.value for r in uncommitted if r.value) == sorted(
        [b"commit-0", b"commit-0", b"abort-0", b"commit-1", b"commit-1", b"abort-1"])
