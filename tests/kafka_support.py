"""A Kafka cluster for integration tests, plus client settings that suit every kind.

Selection order (:func:`selected_engine`): ``KAFKA_BOOTSTRAP_SERVERS`` (an external cluster);
``AGENTFLEET_TEST_BROKER=tansu`` (the embedded broker, asked for); Apache Kafka started from
Maven Central's jars when Java >= 17 and Maven are present (always in CI); a testcontainers
Kafka when a Docker engine answers; the embedded Tansu broker last. Tansu does not hide aborted
transactional records, so the few checks that need that ask :attr:`KafkaCluster.hides_aborted`,
which is true on every Apache Kafka.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_STORED, Consumer, KafkaException, Message, Producer, TopicPartition

from worker.exceptions import EmbeddedBrokerError
from worker.kafka.admin import TopicAdmin
from worker.kafka.apache import KAFKA_VERSION, ApacheKafka, check_requirements
from worker.kafka.embedded import EmbeddedBroker

__all__ = [
    "KafkaCluster",
    "consumer_config",
    "producer_config",
    "start_cluster",
    "ClusterInBackground",
    "start_tansu",
    "selected_engine",
    "docker_available",
]

logger = logging.getLogger(__name__)

Bytesish = bytes | str | None
Headers = Sequence[tuple[str, bytes | str | None]] | Mapping[str, bytes | str | None]
Record = tuple[Bytesish, Bytesish] | tuple[Bytesish, Bytesish, Headers]

# The testcontainers KafkaContainer boots through Confluent image scripts, so the
# apache/kafka image does not work with it; keep the module's default (cp-kafka 7.6 = Kafka 3.6).
TESTCONTAINERS_IMAGE: str | None = None


# confluent-kafka's own (Python-level) settings, whose names do contain '_'.
_PYTHON_SETTINGS = frozenset({"error_cb", "throttle_cb", "stats_cb", "oauth_cb", "logger", "on_delivery", "on_commit"})


def _settings(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Allow ``isolation_level=...`` as well as ``**{"isolation.level": ...}``; librdkafka keys never contain '_'."""
    return {(key if key in _PYTHON_SETTINGS else key.replace("_", ".")): value for key, value in overrides.items()}


def consumer_config(bootstrap: str, group: str, **overrides: Any) -> dict[str, Any]:
    """Consumer settings that are quick on the embedded broker and valid on Apache Kafka.

    fetch.wait.max.ms keeps fetches from idling; 6000 ms is Kafka's minimum
    session timeout, and Tansu holds a join for about half of it.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "fetch.wait.max.ms": 10,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
    config.update(_settings(overrides))
    return config


def producer_config(bootstrap: str, **overrides: Any) -> dict[str, Any]:
    """Producer settings that deliver at once and give up within a test's lifetime."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "linger.ms": 0,
        "acks": "all",
        "message.timeout.ms": 30000,
    }
    config.update(_settings(overrides))
    return config


def docker_available(timeout_s: float = 2.0) -> bool:
    """True when a Docker engine answers a ping within ``timeout_s``."""
    try:
        import docker  # type: ignore[import-untyped]
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=timeout_s)
    except Exception:  # noqa: BLE001 - any failure means "no usable Docker"
        return False
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001
        return False
    finally:
        try:
            client.close()
        except Exception:  # noqa: BLE001
            pass


class KafkaCluster:
    """A running cluster and helpers that create throwaway topics and move records."""

    def __init__(
        self,
        bootstrap_servers: str,
        kind: str,
        hides_aborted: bool,
        stop: Callable[[], None] | None = None,
        apache: ApacheKafka | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.kind = kind
        self.hides_aborted = hides_aborted
        #: The launcher, when these tests started Apache Kafka themselves (node control for failure tests).
        self.apache = apache
        self.admin = TopicAdmin(bootstrap_servers, timeout_s=15.0)
        self._stop = stop
        self._topics: list[str] = []
        self._producer: Producer | None = None

    def __repr__(self) -> str:
        return f"KafkaCluster({self.kind}, {self.bootstrap_servers})"

    def new_topic(self, prefix: str, partitions: int = 1, config: Mapping[str, str] | None = None) -> str:
        """Create a uniquely named topic that is deleted when the session ends."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.admin.create_topic(name, partitions, dict(config) if config else None)
        self._topics.append(name)
        return name

    def produce(self, topic: str, records: Sequence[Record], partition: int | None = None) -> list[Message]:
        """Send records as ``(key, value)`` or ``(key, value, headers)``; return delivery reports.

        Flushes before returning and raises on any delivery error, so a test can
        read back what it wrote right away.
        """
        if self._producer is None:
            self._producer = Producer(producer_config(self.bootstrap_servers))
        producer = self._producer
        delivered: list[Message] = []
        errors: list[str] = []

        def on_delivery(err: Any, msg: Message) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                delivered.append(msg)

        for record in records:
            key, value = record[0], record[1]
            headers = record[2] if len(record) > 2 else None  # type: ignore[misc]
            kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": on_delivery}
            if headers is not None:
                kwargs["headers"] = dict(headers) if isinstance(headers, Mapping) else list(headers)
            if partition is not None:
                kwargs["partition"] = partition
            producer.produce(topic, **kwargs)
        remaining = producer.flush(30)
        if remaining:
            raise KafkaException(f"{remaining} record(s) to {topic} not delivered within 30s")
        if errors:
            raise KafkaException(f"delivery to {topic} failed: {'; '.join(errors)}")
        return delivered

    def consume(
        self,
        topic: str,
        n: int,
        timeout_s: float = 30,
        isolation: str = "read_committed",
        group: str | None = None,
    ) -> list[Message]:
        """Read up to ``n`` records; returns early once ``n`` arrived, else what came by the deadline.

        Partitions are assigned directly instead of subscribing, which skips the
        group join (seconds on Tansu). Without ``group`` a fresh group reads from the
        beginning; with one, reading resumes at that group's committed offsets.
        Nothing is committed.
        """
        deadline = time.monotonic() + timeout_s
        group_id = group or f"test-consume-{uuid.uuid4().hex[:12]}"
        consumer = Consumer(consumer_config(self.bootstrap_servers, group_id, isolation_level=isolation))
        messages: list[Message] = []
        try:
            partitions = self.admin.partitions(topic)
            if partitions is None:
                raise KafkaException(f"topic {topic} does not exist")
            start = OFFSET_BEGINNING if group is None else OFFSET_STORED
            consumer.assign([TopicPartition(topic, p, start) for p in range(partitions)])
            while len(messages) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                for msg in consumer.consume(num_messages=n - len(messages), timeout=min(remaining, 0.1)):
                    error = msg.error()
                    if error is None:
                        messages.append(msg)
                    elif error.fatal():
                        raise KafkaException(error)
                    else:
                        logger.debug("consume %s: %s", topic, error)
        finally:
            consumer.close()
        return messages

    def close(self) -> None:
        """Delete the session's topics and stop whatever this cluster started."""
        try:
            if self._producer is not None:
                self._producer.flush(5)
                self._producer = None
            if self._topics:
                try:
                    self.admin.delete_topics(self._topics)
                except Exception as exc:  # noqa: BLE001 - teardown must reach _stop
                    logger.warning("could not delete test topics: %s", exc)
                self._topics.clear()
        finally:
            if self._stop is not None:
                stop, self._stop = self._stop, None
                stop()


@functools.lru_cache(maxsize=1)
def selected_engine() -> str:
    """Which broker :func:`start_cluster` will use: external, tansu, apache-kafka or testcontainers."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip():
        return "external"
    if os.environ.get("AGENTFLEET_TEST_BROKER", "").strip().lower() == "tansu":
        return "tansu"
    try:
        check_requirements()
        return "apache-kafka"
    except EmbeddedBrokerError:
        pass
    return "testcontainers" if docker_available() else "tansu"


def describe_engine(engine: str) -> str:
    return {
        "external": f"external cluster at {os.environ.get('KAFKA_BOOTSTRAP_SERVERS', '').strip()}",
        "tansu": "embedded Tansu (aborted records visible; set by AGENTFLEET_TEST_BROKER or no Java/Maven)",
        "apache-kafka": f"Apache Kafka {KAFKA_VERSION}, KRaft, started by the tests from Maven Central's jars",
        "testcontainers": "Kafka in a testcontainers Docker container",
    }[engine]


def start_apache(nodes: int = 1, **kwargs: Any) -> KafkaCluster:
    broker = ApacheKafka(nodes=nodes, **kwargs).start()
    try:
        return KafkaCluster(broker.bootstrap_servers, f"apache-kafka-{KAFKA_VERSION}", hides_aborted=True,
                            stop=broker.stop, apache=broker)
    except BaseException:
        broker.stop()
        raise


def _external(bootstrap: str) -> KafkaCluster:
    cluster = KafkaCluster(bootstrap, "external", hides_aborted=True)
    cluster.admin.check_reachable()
    return cluster


def _testcontainers() -> KafkaCluster:
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:  # older testcontainers
        from testcontainers.kafka import KafkaContainer  # type: ignore[no-redef]

    container = KafkaContainer(TESTCONTAINERS_IMAGE) if TESTCONTAINERS_IMAGE else KafkaContainer()
    container = container.with_kraft()
    container.start(timeout=120)
    try:
        bootstrap = container.get_bootstrap_server().replace("localhost", "127.0.0.1")
        cluster = KafkaCluster(bootstrap, "testcontainers", hides_aborted=True, stop=container.stop)
        cluster.admin.check_reachable()
        return cluster
    except BaseException:
        container.stop()
        raise


def _embedded() -> KafkaCluster:
    broker = EmbeddedBroker().start()
    try:
        return KafkaCluster(broker.bootstrap_servers, "embedded", hides_aborted=False, stop=broker.stop)
    except BaseException:
        broker.stop()
        raise


def _start_selected() -> KafkaCluster:
    engine = selected_engine()
    if engine == "external":
        cluster = _external(os.environ["KAFKA_BOOTSTRAP_SERVERS"].strip())
    elif engine == "apache-kafka":
        cluster = start_apache()
    elif engine == "testcontainers":
        cluster = _testcontainers()
    else:
        cluster = _embedded()
    logger.info("integration tests use %r", cluster)
    return cluster


@contextmanager
def start_cluster(background: ClusterInBackground | None = None) -> Iterator[KafkaCluster]:
    """Pick and start a cluster (see module docstring), or take ``background``'s; tear it down on exit."""
    cluster = background.result() if background is not None else _start_selected()
    try:
        yield cluster
    finally:
        cluster.close()


class ClusterInBackground:
    """:func:`start_cluster`'s cluster, started on a thread while tests that need no broker run.

    The thread only starts the cluster; :meth:`result` (the fixture) hands it over or raises what the
    start raised, and whoever holds it closes it.
    """

    def __init__(self) -> None:
        self._cluster: KafkaCluster | None = None
        self._error: BaseException | None = None
        self._taken = False
        self._thread = threading.Thread(target=self._start, name="session-broker-start", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        try:
            self._cluster = _start_selected()
        except BaseException as exc:  # noqa: BLE001 - raised again by result()
            self._error = exc

    def result(self) -> KafkaCluster:
        self._thread.join()
        self._taken = True
        if self._error is not None:
            raise self._error
        assert self._cluster is not None
        return self._cluster

    def close_unused(self) -> None:
        """Stop the cluster if no fixture took it (the session ended before any test needed it)."""
        self._thread.join()
        if not self._taken and self._cluster is not None:
            self._cluster.close()


@contextmanager
def start_tansu() -> Iterator[KafkaCluster]:
    """The embedded Tansu broker, for the smoke subset that keeps the zero-install default honest."""
    cluster = _embedded()
    try:
        yield cluster
    finally:
        cluster.close()
