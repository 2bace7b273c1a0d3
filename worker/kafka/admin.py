"""Topic administration with bounded waits.

librdkafka retries connections forever and admin futures never time out on their
own, so every call here carries an explicit deadline and turns "no answer" into a
:class:`BrokerUnavailableError` that names the setting to fix.
"""

from __future__ import annotations

import concurrent.futures
import logging
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic

from worker.exceptions import BrokerUnavailableError, ConfigurationError
from worker.kafka.acls import TOPIC, Acl, denied, principal
from worker.kafka.properties import producer_properties

__all__ = ["TopicAdmin"]

logger = logging.getLogger(__name__)

_METADATA_POLL_S = 0.05

# Broker error codes that mean "the request was wrong", keyed to the argument at fault.
_CONFIG_ERRORS: dict[int, str] = {
    KafkaError.INVALID_PARTITIONS: "partitions",
    KafkaError.INVALID_REPLICATION_FACTOR: "replication_factor",
    KafkaError.INVALID_CONFIG: "config",
    KafkaError.TOPIC_EXCEPTION: "topic",
    KafkaError.INVALID_REPLICA_ASSIGNMENT: "replication_factor",
    KafkaError.POLICY_VIOLATION: "config",
}


class TopicAdmin:
    """Create, inspect and delete topics on one cluster, never blocking past ``timeout_s``."""

    def __init__(
        self,
        bootstrap_servers: str,
        config: Mapping[str, Any] | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        if not bootstrap_servers:
            raise ConfigurationError("bootstrap.servers", "no Kafka bootstrap servers configured")
        self.bootstrap_servers = bootstrap_servers
        self.timeout_s = timeout_s
        self._principal = principal(config or {})  # names who lacks an ACL, never the credentials
        settings: dict[str, Any] = {
            # Route librdkafka's connection-refused chatter into logging instead of stderr.
            "logger": logger,
            **producer_properties(config or {}),
            "bootstrap.servers": bootstrap_servers,
        }
        try:
            self._client = AdminClient(settings)
        except KafkaException as exc:
            raise invalid_property_error(exc) from None

    @property
    def client(self) -> AdminClient:
        """The underlying confluent-kafka AdminClient, for calls this class does not wrap."""
        return self._client

    # -- inspection -------------------------------------------------------------------

    def check_reachable(self) -> None:
        """Fail fast with a readable error when no broker answers at bootstrap.servers."""
        self._metadata()

    def partitions(self, topic: str) -> int | None:
        """The topic's partition count, or None if it does not exist."""
        metadata = self._metadata()
        found = metadata.topics.get(topic)
        if found is None:
            return None
        if found.error is not None and found.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            return None
        return len(found.partitions)

    def topic_exists(self, topic: str) -> bool:
        return self.partitions(topic) is not None

    # -- changes ----------------------------------------------------------------------

    def create_topic(
        self,
        name: str,
        partitions: int,
        config: Mapping[str, str] | None = None,
        replication_factor: int = 1,
    ) -> bool:
        """Create a topic; True if created, False if it already existed with ``partitions``.

        An existing topic with a different partition count is a misconfiguration
        (keys would hash to other partitions), so that raises ConfigurationError.
        """
        created = self._create(name, partitions, config, replication_factor)
        if created:
            return True
        actual = self.partitions(name)
        if actual is not None and actual != partitions:
            raise ConfigurationError(
                "partitions",
                f"topic {name!r} already exists with {actual} partitions, expected {partitions}",
            )
        return False

    def ensure_topic(self, name: str, partitions: int, config: Mapping[str, str] | None = None,
                     replication_factor: int = 1) -> int:
        """Create the topic if missing; return its actual partition count either way.

        Unlike create_topic this tolerates a different existing count and leaves
        the decision to the caller. An existing topic is taken as it is (its configs too).
        ``replication_factor`` -1 asks for the broker's ``default.replication.factor``.
        """
        actual = self.partitions(name)
        if actual is not None:
            return actual
        if self._create(name, partitions, config, replication_factor):
            return partitions
        # Lost a creation race (workers of one app starting together): Apache Kafka answers
        # TOPIC_ALREADY_EXISTS before its metadata lists the winner's topic, so wait for it too. The
        # count comes from the same answer: on a cluster the next request may go to a broker that
        # does not know the topic yet (seen on 3 nodes).
        seen: list[int] = []

        def listed(md: Any) -> bool:
            found = md.topics.get(name)
            if found is not None and found.error is None and found.partitions:
                seen.append(len(found.partitions))
            return bool(seen)

        self._await_metadata(time.monotonic() + self.timeout_s, listed)
        actual = seen[0] if seen else None
        if actual is None:
            raise BrokerUnavailableError(
                "bootstrap.servers", f"topic {name!r} reported as existing but not in metadata"
            )
        return actual

    def delete_topics(self, names: Iterable[str]) -> list[str]:
        """Delete topics, ignoring unknown ones; return the names actually deleted.

        Waits (bounded) until metadata stops listing them, so a following
        create of the same name does not collide with a pending deletion.
        """
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return []
        deadline = time.monotonic() + self.timeout_s
        futures = self._client.delete_topics(
            wanted, operation_timeout=self.timeout_s, request_timeout=self.timeout_s
        )
        deleted: list[str] = []
        for name, future in futures.items():
            try:
                future.result(timeout=self._remaining(deadline))
            except KafkaException as exc:
                if _code(exc) == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    logger.debug("topic %s already absent", name)
                    continue
                raise
            except concurrent.futures.TimeoutError as exc:
                raise self._unavailable() from exc
            deleted.append(name)
        if deleted:
            logger.info("deleted topics %s", ", ".join(deleted))
            self._await_metadata(deadline, lambda md: not any(n in md.topics for n in deleted))
        return deleted

    # -- internals --------------------------------------------------------------------

    def _create(
        self,
        name: str,
        partitions: int,
        config: Mapping[str, str] | None,
        replication_factor: int,
    ) -> bool:
        """Send CreateTopics; True if created, False if it already existed."""
        # Checked here because some brokers (Tansu) accept nonsense such as 0 partitions.
        if partitions < 1:
            raise ConfigurationError("partitions", f"topic {name!r} needs at least 1 partition, got {partitions}")
        if replication_factor < 1 and replication_factor != -1:
            raise ConfigurationError(
                "replication_factor", f"topic {name!r} needs replication_factor >= 1 (or -1), got {replication_factor}"
            )
        deadline = time.monotonic() + self.timeout_s
        new_topic = NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=replication_factor,
            config={k: str(v) for k, v in (config or {}).items()},
        )
        futures = self._client.create_topics(
            [new_topic], operation_timeout=self.timeout_s, request_timeout=self.timeout_s
        )
        try:
            futures[name].result(timeout=self._remaining(deadline))
        except KafkaException as exc:
            code = _code(exc)
            if code == KafkaError.TOPIC_ALREADY_EXISTS:
                logger.debug("topic %s already exists", name)
                return False
            if code in (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED):
                # Kafka creates a topic for a principal with CREATE on the topic (or on the cluster).
                raise denied(self._principal, [Acl(TOPIC, name, "CREATE")]) from None
            if code in _CONFIG_ERRORS:
                raise ConfigurationError(
                    _CONFIG_ERRORS[code], f"cannot create topic {name!r}: {exc.args[0].str()}"
                ) from exc
            raise
        except concurrent.futures.TimeoutError as exc:
            raise self._unavailable() from exc
        logger.info("created topic %s (%d partitions, config=%s)", name, partitions, dict(config or {}))
        # Real Kafka acknowledges before every broker's metadata cache has the topic.
        self._await_metadata(deadline, lambda md: name in md.topics and md.topics[name].error is None)
        return True

    def _metadata(self, timeout_s: float | None = None) -> ClusterMetadata:
        # All-topics metadata on purpose: asking for one topic lets a producer-type
        # handle auto-create it on brokers with auto.create.topics.enable.
        try:
            return self._client.list_topics(timeout=self.timeout_s if timeout_s is None else timeout_s)
        except KafkaException as exc:
            raise self._unavailable() from exc

    def _await_metadata(self, deadline: float, condition: Any) -> None:
        """Poll metadata until ``condition`` holds or the deadline passes (then just log)."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                logger.warning("metadata did not converge within %gs; continuing", self.timeout_s)
                return
            try:
                if condition(self._metadata(timeout_s=remaining)):
                    return
            except BrokerUnavailableError:
                continue
            # No event announces metadata convergence; back off briefly between polls.
            time.sleep(min(_METADATA_POLL_S, max(deadline - time.monotonic(), 0)))

    def _remaining(self, deadline: float) -> float:
        return max(deadline - time.monotonic(), 0.001)

    def _unavailable(self) -> BrokerUnavailableError:
        return BrokerUnavailableError(
            "bootstrap.servers",
            f"cannot reach Kafka at {self.bootstrap_servers} within {self.timeout_s:g}s",
        )


_PROPERTY_IN_MESSAGE = re.compile(r'(?:property:? )"([^"]+)"')


def invalid_property_error(exc: KafkaException) -> ConfigurationError:
    """librdkafka's refusal of a passed-through property, as an error naming ``kafka.<property>``."""
    message = exc.args[0].str() if exc.args and isinstance(exc.args[0], KafkaError) else str(exc)
    found = _PROPERTY_IN_MESSAGE.search(message)
    return ConfigurationError(f"kafka.{found.group(1)}" if found else "kafka", message)


def _code(exc: KafkaException) -> int | None:
    error = exc.args[0] if exc.args else None
    return error.code() if isinstance(error, KafkaError) else None
