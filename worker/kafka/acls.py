"""The Kafka ACLs a worker needs, checked at start-up before it creates topics or joins its group.

Under an authorizer a missing ACL otherwise surfaces late and in disguise (measured on Apache Kafka
4.4 with the StandardAuthorizer): a topic the worker may not DESCRIBE is left out of metadata, so it
"does not exist"; a group without READ keeps the consumer retrying with a warning forever; a
changelog without WRITE aborts the first transaction only after the worker joined the group. The
broker reports the operations its caller may perform on a topic or group (KIP-430 authorized
operations), so the worker asks once, and every authorization error that still surfaces later
(init_transactions, the consumer, topic creation) becomes the same one-line
:class:`~worker.exceptions.KafkaAuthorizationError`, exit code 2.

Operations that imply others: READ and WRITE imply DESCRIBE on the same resource, and a WRITE ACL on
the transactional id also covers the producer id (KIP-679: no IDEMPOTENT_WRITE on the cluster).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AclOperation, AdminClient

from worker.config import ProcessingGuarantee, WorkerSettings
from worker.exceptions import KafkaAuthorizationError

__all__ = [
    "CLUSTER",
    "GROUP",
    "TOPIC",
    "TRANSACTIONAL_ID",
    "Acl",
    "AclCheck",
    "authorization_error",
    "denied",
    "principal",
    "required_acls",
]

logger = logging.getLogger(__name__)

TOPIC = "topic"
GROUP = "group"
TRANSACTIONAL_ID = "transactional id"
CLUSTER = "cluster"

# The broker's code when each kind of resource is refused.
_REFUSED: dict[str, int] = {
    TOPIC: KafkaError.TOPIC_AUTHORIZATION_FAILED,
    GROUP: KafkaError.GROUP_AUTHORIZATION_FAILED,
    TRANSACTIONAL_ID: KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    CLUSTER: KafkaError.CLUSTER_AUTHORIZATION_FAILED,
}
# While a group coordinator moves or loads, DescribeGroups answers with these; asking again helps.
_COORDINATOR_BUSY = frozenset({KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
                               KafkaError.COORDINATOR_LOAD_IN_PROGRESS})
# No event announces a coordinator becoming ready: ask again after this pause, until the deadline.
_RETRY_PAUSE_S = 0.1


@dataclass(frozen=True)
class Acl:
    """One ALLOW ACL for the worker's principal: ``operation`` on the resource ``resource_type`` ``name``."""

    resource_type: str  # topic, group, transactional id, cluster
    name: str
    operation: str  # READ, WRITE, DESCRIBE, CREATE, IDEMPOTENT_WRITE (AclOperation names)

    def __str__(self) -> str:
        return f"{self.operation} {self.resource_type} {self.name}"


def required_acls(settings: WorkerSettings, creates_topics: bool = False, event_log: bool = False) -> list[Acl]:
    """Every ACL the worker needs, as README "Security: ACLs the worker needs" lists them.

    ``creates_topics``: the worker creates the changelog, dead-letter and repartition topics
    itself at first start (the default), which needs CREATE on each; an operator who creates them
    beforehand grants no CREATE at all. ``event_log``: the agent configuration turns the event log on.
    """
    s = settings
    acls = [Acl(TOPIC, s.input_topic, "READ"), Acl(TOPIC, s.output_topic, "WRITE"),
            Acl(TOPIC, s.changelog_topic, "READ"), Acl(TOPIC, s.changelog_topic, "WRITE"),
            Acl(TOPIC, s.dead_letter_topic, "WRITE")]
    created = [s.changelog_topic, s.dead_letter_topic]
    if s.key_field:
        acls += [Acl(TOPIC, s.repartition_topic, "READ"), Acl(TOPIC, s.repartition_topic, "WRITE")]
        created.append(s.repartition_topic)
    if event_log:
        acls.append(Acl(TOPIC, s.events_topic, "WRITE"))
        created.append(s.events_topic)
    if creates_topics:
        acls += [Acl(TOPIC, name, "CREATE") for name in created]
    # The restore consumer never joins or commits, but confluent-kafka insists on a group.id and
    # librdkafka looks up that group's coordinator: FindCoordinator needs DESCRIBE.
    acls += [Acl(GROUP, s.app_id, "READ"), Acl(GROUP, f"{s.app_id}-restore", "DESCRIBE")]
    if s.processing_guarantee is ProcessingGuarantee.EXACTLY_ONCE:
        acls.append(Acl(TRANSACTIONAL_ID, s.transactional_id, "WRITE"))
    return acls


def principal(kafka: Mapping[str, Any]) -> str:
    """Who the broker sees, as far as the client knows it (SSL and OAuth principals are the broker's to map)."""
    user = kafka.get("sasl.username")
    return f"user {user}" if user else "the worker's principal"


def denied(who: str, lacking: Iterable[Acl]) -> KafkaAuthorizationError:
    """One line naming the principal and, per resource, the operations it lacks and the broker's code."""
    by_resource: dict[tuple[str, str], list[str]] = {}
    for acl in lacking:
        operations = by_resource.setdefault((acl.resource_type, acl.name), [])
        if acl.operation not in operations:
            operations.append(acl.operation)
    parts = [f"may not {', '.join(ops)} {kind} {name} ({KafkaError(_REFUSED[kind]).name()})"
             for (kind, name), ops in by_resource.items()]
    return KafkaAuthorizationError("kafka ACL", f"{who} " + "; ".join(parts))


def authorization_error(error: BaseException | KafkaError | None, settings: WorkerSettings,
                        topic: str | None = None, topic_operation: str = "READ") -> KafkaAuthorizationError | None:
    """``error`` as the ACL it shows missing, or None when it is no authorization error.

    Accepts a KafkaError, a KafkaException, or an exception raised from one (``__cause__``). The
    resource follows from the code: the worker uses one group and one transactional id; a topic
    error names ``topic`` (the consumer's records say which), else the input topic.
    """
    while isinstance(error, BaseException) and not isinstance(error, KafkaException):
        error = error.__cause__
    if isinstance(error, KafkaException):
        error = error.args[0] if error.args and isinstance(error.args[0], KafkaError) else None
    if error is None:
        return None
    code = error.code()
    if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
        acl = Acl(TOPIC, topic or settings.input_topic, topic_operation)
    elif code == KafkaError.GROUP_AUTHORIZATION_FAILED:
        acl = Acl(GROUP, settings.app_id, "READ")
    elif code == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
        acl = Acl(TRANSACTIONAL_ID, settings.transactional_id, "WRITE")
    elif code == KafkaError.CLUSTER_AUTHORIZATION_FAILED:
        # The only cluster-level call the worker makes is an idempotent producer's InitProducerId.
        acl = Acl(CLUSTER, "kafka-cluster", "IDEMPOTENT_WRITE")
    else:
        return None
    return denied(principal(settings.kafka), [acl])


class AclCheck:
    """Asks the broker which of the worker's topic and group ACLs are missing.

    :meth:`before_topics` runs before the worker creates or inspects topics, so a topic it may not
    describe is reported as such rather than as missing; :meth:`after_topics` checks the topics
    that did not exist until the worker created them. A broker that reports no authorized
    operations (no KIP-430 support, e.g. Tansu) is not checked here: its errors are classified
    where they surface. Transactional ids have no such query; init_transactions reports those.
    """

    def __init__(self, admin: AdminClient, settings: WorkerSettings, timeout_s: float, event_log: bool = False) -> None:
        self._admin = admin
        self._settings = settings
        self._timeout_s = timeout_s
        self._needed = [acl for acl in required_acls(settings, event_log=event_log)
                        if acl.resource_type in (TOPIC, GROUP)]
        self._unverified: set[str] = set()  # topics that did not exist yet

    def before_topics(self) -> None:
        topics = {acl.name for acl in self._needed if acl.resource_type == TOPIC}
        lacking = self._topic_lacks(topics) + self._group_lacks()
        if lacking:
            # In the order of required_acls (and the README), whatever order the answers came in.
            raise denied(principal(self._settings.kafka), sorted(lacking, key=self._needed.index))

    def after_topics(self) -> None:
        if self._unverified:
            lacking = self._topic_lacks(set(self._unverified))
            if lacking:
                raise denied(principal(self._settings.kafka), lacking)

    def _topic_lacks(self, topics: set[str]) -> list[Acl]:
        deadline = time.monotonic() + self._timeout_s
        futures = self._admin.describe_topics(TopicCollection(sorted(topics)), include_authorized_operations=True,
                                              request_timeout=self._timeout_s)
        lacking: list[Acl] = []
        self._unverified -= topics
        for topic, future in futures.items():
            needed = [acl for acl in self._needed if acl.resource_type == TOPIC and acl.name == topic]
            try:
                allowed = future.result(timeout=max(deadline - time.monotonic(), 0.001)).authorized_operations
            except KafkaException as exc:
                code = _code(exc)
                if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                    lacking += needed  # not even DESCRIBE, which READ and WRITE both imply
                elif code == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    self._unverified.add(topic)  # created (or reported missing) by the caller
                else:
                    logger.debug("ACL check of topic %s skipped: %s", topic, exc)
                continue
            except FutureTimeout:
                logger.debug("ACL check of topic %s skipped: no answer in %gs", topic, self._timeout_s)
                continue
            lacking += _without(needed, allowed)
        return lacking

    def _group_lacks(self) -> list[Acl]:
        needed = {acl.name: acl for acl in self._needed if acl.resource_type == GROUP}
        lacking: list[Acl] = []
        deadline = time.monotonic() + self._timeout_s
        pending = sorted(needed)
        while pending:
            futures = self._admin.describe_consumer_groups(pending, include_authorized_operations=True,
                                                           request_timeout=self._timeout_s)
            retry: list[str] = []
            for group, future in futures.items():
                try:
                    allowed = future.result(timeout=max(deadline - time.monotonic(), 0.001)).authorized_operations
                except KafkaException as exc:
                    code = _code(exc)
                    if code == KafkaError.GROUP_AUTHORIZATION_FAILED:
                        lacking.append(needed[group])  # not even DESCRIBE
                    elif code in _COORDINATOR_BUSY and time.monotonic() + _RETRY_PAUSE_S < deadline:
                        retry.append(group)
                    else:
                        logger.debug("ACL check of group %s skipped: %s", group, exc)
                    continue
                except FutureTimeout:
                    logger.debug("ACL check of group %s skipped: no answer in %gs", group, self._timeout_s)
                    continue
                lacking += _without([needed[group]], allowed)
            pending = retry
            if pending:
                time.sleep(_RETRY_PAUSE_S)
        return lacking


def _code(exc: KafkaException) -> int | None:
    error = exc.args[0] if exc.args else None
    return error.code() if isinstance(error, KafkaError) else None


def _without(needed: list[Acl], allowed: list[AclOperation] | None) -> list[Acl]:
    """The ACLs among ``needed`` whose operation is not in ``allowed``; none when the broker did not say."""
    if allowed is None:
        return []
    names = {operation.name for operation in allowed}
    return [acl for acl in needed if acl.operation not in names]
