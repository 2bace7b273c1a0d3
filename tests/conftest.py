"""Shared pytest fixtures; the logic lives in tests/kafka_support.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.kafka_support import KafkaCluster, start_cluster


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaCluster]:
    """One Kafka cluster for the whole session: external, testcontainers or embedded."""
    with start_cluster() as cluster:
        yield cluster
