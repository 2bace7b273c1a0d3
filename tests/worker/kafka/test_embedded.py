"""The embedded broker's lifecycle, and the Kafka features the runtime relies on."""

from __future__ import annotations

import os
import socket
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.kafka_support import KafkaCluster, consumer_config, producer_config
from worker.exceptions import EmbeddedBrokerError, WorkerError
from worker.kafka.embedded import EmbeddedBroker, tansu_binary

pytestmark = pytest.mark.integration


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_tansu_binary_resolves() -> None:
    binary = tansu_binary()
    assert binary.name == "tansu"
    assert binary.is_file()
    assert os.access(binary, os.X_OK)


def test_broker_starts_and_stops() -> None:
    broker = EmbeddedBroker()
    assert broker.pid is None
    broker.start()
    pid, port = broker.pid, broker.port
    assert pid is not None and port is not None
    try:
        assert broker.bootstrap_servers == f"127.0.0.1:{port}"
        assert _pid_alive(pid)
        assert _listening(port)
    finally:
        started = time.monotonic()
        broker.stop()
    assert time.monotonic() - started < 2, "stop should not need the SIGKILL fallback"
    assert broker.pid is None
    assert not _pid_alive(pid)
    assert not _listening(port)
    broker.stop()  # idempotent


def test_context_manager_and_explicit_port_in_use() -> None:
    with EmbeddedBroker() as broker:
        assert broker.port is not None
        with pytest.raises(EmbeddedBrokerError, match="in use"):
            EmbeddedBroker(port=broker.port).start()
        pid = broker.pid
    assert pid is not None and not _pid_alive(pid)
    assert issubclass(EmbeddedBrokerError, WorkerError)


def test_round_trip_with_headers(kafka: KafkaCluster) -> None:
    topic = kafka.new_topic("roundtrip", partitions=2)
    records = [
        (b"k1", b"v1", [("trace", b"abc"), ("attempt", b"1")]),
        ("k2", "v2", {"trace": "def"}),
        (None, b"v3"),
        (b"k4", None),
    ]
    kafka.produce(topic, records)
    got = kafka.consume(topic, len(records), timeout_s=15)
    assert len(got) == len(records)
    by_value = {m.value(): m for m in got}
    assert by_value[b"v1"].key() == b"k1"
    assert by_value[b"v1"].headers() == [("trace", b"abc"), ("attempt", b"1")]
    assert by_value[b"v2"].key() == b"k2"
    assert by_value[b"v2"].headers() == [("trace", b"def")]
    assert by_value[b"v3"].key() is None
    assert by_value[None].key() == b"k4"


def test_transactional_offsets_advance_only_on_commit(kafka: KafkaCluster) -> None:
    """The exactly-once loop: output records and input offsets commit atomically."""
    source = kafka.new_topic("txn-in")
    sink = kafka.new_topic("txn-out")
    kafka.produce(source, [(b"k", f"in-{i}".encode()) for i in range(3)])
    group = f"txn-group-{uuid.uuid4().hex[:8]}"
    bootstrap = kafka.bootstrap_servers

    assigned: list[TopicPartition] = []
    consumer = Consumer(consumer_config(bootstrap, group, isolation_level="read_committed"))
    # read_uncommitted: an OffsetFetch without require_stable answers at once even
    # while a transaction holds pending offsets for the group.
    observer = Consumer(consumer_config(bootstrap, group, isolation_level="read_uncommitted"))
    producer = Producer(producer_config(bootstrap, transactional_id=f"txn-{uuid.uuid4().hex[:8]}"))
    try:
        consumer.subscribe([source], on_assign=lambda c, parts: assigned.extend(parts))
        inputs = []
        deadline = time.monotonic() + 20
        while len(inputs) < 3 and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                inputs.append(msg)
        assert assigned, "no partitions assigned"
        assert len(inputs) == 3
        next_offset = [TopicPartition(source, 0, inputs[-1].offset() + 1)]

        def committed() -> int:
            return observer.committed([TopicPartition(source, 0)], timeout=10)[0].offset

        assert committed() < 0  # nothing committed yet

        producer.init_transactions(10)
        # An aborted transaction must not move the group's offsets.
        producer.begin_transaction()
        producer.produce(sink, key=b"k", value=b"aborted")
        producer.send_offsets_to_transaction(next_offset, consumer.consumer_group_metadata(), 10)
        assert producer.flush(10) == 0  # make the broker hold the record, so the abort is real
        producer.abort_transaction(10)
        assert committed() < 0

        producer.begin_transaction()
        producer.produce(sink, key=b"k", value=b"out")
        producer.send_offsets_to_transaction(next_offset, consumer.consumer_group_metadata(), 10)
        producer.flush(10)
        assert committed() < 0, "offsets visible before commit"
        producer.commit_transaction(10)
        # Apache Kafka returns from EndTxn once the commit is decided; the group coordinator applies
        # the offsets when the marker reaches __consumer_offsets, a moment later.
        deadline = time.monotonic() + 10
        while committed() != 3 and time.monotonic() < deadline:
            observer.poll(0.05)
        assert committed() == 3

        # Tansu (hides_aborted=False) still serves aborted records to read_committed readers.
        expected = [b"out"] if kafka.hides_aborted else [b"aborted", b"out"]
        outputs = [m.value() for m in kafka.consume(sink, len(expected), timeout_s=10)]
        assert outputs == expected
    finally:
        consumer.close()
        observer.close()
