"""The topics a worker reads and writes: checked, and created where the worker owns them, at start-up.

Runs before the worker joins its group, so a missing topic, a missing ACL or a partition-count
mismatch stops it with one line naming the setting, before it consumed or produced anything.
"""

from __future__ import annotations

from worker.config import WorkerSettings
from worker.exceptions import BrokerUnavailableError, ConfigurationError
from worker.kafka.acls import AclCheck
from worker.kafka.admin import TopicAdmin

__all__ = ["prepare_topics"]


def prepare_topics(settings: WorkerSettings, event_log: bool = False) -> int:
    """Fail fast on an unreachable broker or missing topics; create changelog, DLQ and repartition topics,
    and the event log's topic when ``event_log``.

    Returns the input topic's partition count.
    """
    s = settings
    admin = TopicAdmin(s.bootstrap_servers, dict(s.kafka), timeout_s=s.startup_timeout_s)
    try:
        admin.check_reachable()  # librdkafka keeps reconnecting with back-off until the deadline
    except BrokerUnavailableError as exc:
        raise BrokerUnavailableError(exc.setting, f"{exc.message} (the start-up deadline is "
                                                  "--startup-timeout-s / AGENTFLEET_STARTUP_TIMEOUT_S)") from None
    # Before topics are looked up or created: a topic hidden by a missing ACL is not "missing".
    acls = AclCheck(admin.client, s, s.startup_timeout_s, event_log)
    acls.before_topics()
    partitions = admin.partitions(s.input_topic)
    if partitions is None:
        raise ConfigurationError("input-topic", f"topic {s.input_topic!r} does not exist")
    if admin.partitions(s.output_topic) is None:
        raise ConfigurationError("output-topic", f"topic {s.output_topic!r} does not exist")
    replicas = s.replication_factor
    changelog = admin.ensure_topic(s.changelog_topic, partitions, {"cleanup.policy": "compact"}, replicas)
    if changelog != partitions:
        raise ConfigurationError("app-id", f"changelog topic {s.changelog_topic!r} has {changelog} partitions "
                                           f"but {s.input_topic!r} has {partitions}; they must match")
    admin.ensure_topic(s.dead_letter_topic, partitions, replication_factor=replicas)
    if s.key_field:
        repartition = admin.ensure_topic(s.repartition_topic, partitions, replication_factor=replicas)
        if repartition != partitions:
            raise ConfigurationError("key-field", f"repartition topic {s.repartition_topic!r} has {repartition} "
                                                  f"partitions but {s.input_topic!r} has {partitions}")
    if event_log:
        events = admin.ensure_topic(s.events_topic, partitions, replication_factor=replicas)
        if events != partitions:
            raise ConfigurationError("app-id", f"event-log topic {s.events_topic!r} has {events} partitions but "
                                               f"{s.input_topic!r} has {partitions}; they must match")
    if s.approvals:
        from worker.approvals import prepare_approval_topics

        prepare_approval_topics(admin, s, partitions)
    acls.after_topics()
    return partitions
