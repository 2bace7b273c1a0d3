"""TopicAdmin against a live broker, and its bounded failure when none answers."""

from __future__ import annotations

import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from confluent_kafka.admin import ConfigResource

from tests.kafka_support import KafkaCluster
from worker.exceptions import BrokerUnavailableError, ConfigurationError
from worker.kafka.admin import TopicAdmin

pytestmark = pytest.mark.integration


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_create_ensure_partitions_delete(kafka: KafkaCluster) -> None:
    admin = kafka.admin
    name, other = _unique("admin-a"), _unique("admin-b")
    try:
        assert admin.partitions(name) is None
        assert not admin.topic_exists(name)

        assert admin.create_topic(name, 3) is True
        assert admin.create_topic(name, 3) is False  # idempotent
        assert admin.partitions(name) == 3
        assert admin.topic_exists(name)
        with pytest.raises(ConfigurationError) as mismatch:
            admin.create_topic(name, 2)
        assert mismatch.value.setting == "partitions"

        assert admin.ensure_topic(name, 5) == 3  # existing count wins
        assert admin.ensure_topic(other, 2) == 2
        assert admin.partitions(other) == 2
    finally:
        deleted = admin.delete_topics([name, other, _unique("never-created")])
    assert sorted(deleted) == sorted([name, other])
    assert not admin.topic_exists(name)
    assert not admin.topic_exists(other)
    assert admin.delete_topics([]) == []


def test_ensure_topic_from_racing_clients(kafka: KafkaCluster) -> None:
    """Workers of one app start together and all ensure its DLQ topic: each must get the partition
    count, including the losers of the creation race (on Apache Kafka their metadata may lag)."""
    name = _unique("admin-race")
    admins = [TopicAdmin(kafka.bootstrap_servers) for _ in range(4)]
    try:
        with ThreadPoolExecutor(len(admins)) as pool:
            counts = list(pool.map(lambda admin: admin.ensure_topic(name, 12), admins))
        assert counts == [12] * len(admins)
    finally:
        kafka.admin.delete_topics([name])


def test_rejects_zero_partitions(kafka: KafkaCluster) -> None:
    with pytest.raises(ConfigurationError, match="^partitions: "):
        kafka.admin.create_topic(_unique("admin-zero"), 0)


def test_create_with_compact_config(kafka: KafkaCluster) -> None:
    name = kafka.new_topic("admin-compact", config={"cleanup.policy": "compact"})
    assert kafka.admin.partitions(name) == 1
    futures = kafka.admin.client.describe_configs([ConfigResource("topic", name)])
    (future,) = futures.values()
    configs = future.result(timeout=10)
    assert configs["cleanup.policy"].value == "compact"


def test_check_reachable(kafka: KafkaCluster) -> None:
    kafka.admin.check_reachable()


def test_check_reachable_closed_port_is_bounded() -> None:
    servers = f"127.0.0.1:{_closed_port()}"
    admin = TopicAdmin(servers, timeout_s=2)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailableError) as raised:
        admin.check_reachable()
    elapsed = time.monotonic() - started
    assert elapsed < 4
    assert raised.value.setting == "bootstrap.servers"
    assert str(raised.value) == f"bootstrap.servers: cannot reach Kafka at {servers} within 2s"
    assert isinstance(raised.value, ConfigurationError)


def test_empty_bootstrap_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="^bootstrap.servers: "):
        TopicAdmin("")
