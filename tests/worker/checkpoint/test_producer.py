"""The transactional producer's steps against a real broker."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.kafka_support import consumer_config, producer_config
from worker.checkpoint.producer import TransactionalProducer

pytestmark = pytest.mark.integration


def test_commit_on_another_thread_completes_while_a_rebalance_callback_waits_for_it(kafka):
    """The worker's shape: the loop begins a transaction, the committer thread commits it, and a
    rebalance callback (inside the consumer's poll) waits for that commit. The commit must not need
    the consumer, whose calls confluent-kafka serialises: that wait hung the whole group once."""
    topic = kafka.new_topic("commit-cb")
    output = kafka.new_topic("commit-cb-out")
    group = f"commit-cb-{uuid.uuid4().hex[:8]}"
    consumer = Consumer(consumer_config(kafka.bootstrap_servers, group))
    protocol = TransactionalProducer(
        lambda: Producer(producer_config(kafka.bootstrap_servers, transactional_id=f"txn-{group}")), consumer,
        timeout_s=20)
    protocol.init()
    outcome: dict[str, Any] = {}
    committer = ThreadPoolExecutor(1)

    def close(offsets: dict[tuple[str, int], int]) -> None:
        protocol.flush()
        protocol.send_offsets(offsets)
        protocol.commit()

    def on_assign(c: Consumer, partitions: list[TopicPartition]) -> None:
        if outcome:
            return
        protocol.begin()
        protocol.produce(output, b"v", key=b"k")
        closing = committer.submit(close, {(topic, 0): 1})
        try:
            closing.result(timeout=15)
            outcome["committed"] = True
        except TimeoutError:
            outcome["committed"] = False  # the committer waits for this poll to return

    consumer.subscribe([topic], on_assign=on_assign)
    deadline = time.monotonic() + 30
    try:
        while not outcome and time.monotonic() < deadline:
            consumer.poll(0.1)
        assert outcome == {"committed": True}
        assert [tp.offset for tp in consumer.committed([TopicPartition(topic, 0)], timeout=10)] == [1]
        assert [m.value() for m in kafka.consume(output, 1, timeout_s=10)] == [b"v"]
    finally:
        committer.shutdown(wait=True)  # a stuck commit goes on once the poll above has returned
        consumer.close()
        protocol.close(5)
