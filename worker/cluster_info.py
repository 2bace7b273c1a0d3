"""What ``agentfleet topics list|describe`` and ``agentfleet groups describe`` read from the cluster.

Each function returns plain data (JSON-ready); the CLI prints it. Only the AdminClient is used:
nothing joins a group or commits.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, IsolationLevel, KafkaException, TopicPartition
from confluent_kafka.admin import ConfigResource, OffsetSpec, ResourceType

from worker.exceptions import ConfigurationError
from worker.kafka.admin import TopicAdmin

__all__ = ["describe_group", "describe_topic", "list_topics"]

_TIMEOUT_S = 15.0


def list_topics(admin: TopicAdmin, internal: bool = False) -> list[dict[str, Any]]:
    metadata = admin.client.list_topics(timeout=_TIMEOUT_S)
    return [{"topic": name, "partitions": len(meta.partitions)}
            for name, meta in sorted(metadata.topics.items()) if internal or not name.startswith("__")]


def describe_topic(admin: TopicAdmin, topic: str) -> dict[str, Any] | None:
    """Partitions (leader, replicas, in-sync replicas, offsets) and the configs set on the topic."""
    # All topics' metadata, not list_topics(topic): asking for one topic by name lets a broker with
    # auto.create.topics.enable create it.
    metadata = admin.client.list_topics(timeout=_TIMEOUT_S).topics.get(topic)
    if metadata is None or metadata.error is not None:
        return None
    partitions = sorted(metadata.partitions.values(), key=lambda p: p.id)
    ends = _offsets(admin, [TopicPartition(topic, p.id) for p in partitions], OffsetSpec.latest())
    starts = _offsets(admin, [TopicPartition(topic, p.id) for p in partitions], OffsetSpec.earliest())
    resource = ConfigResource(ResourceType.TOPIC, topic)
    entries = admin.client.describe_configs([resource])[resource].result(timeout=_TIMEOUT_S)
    configs = {name: entry.value for name, entry in sorted(entries.items()) if not entry.is_default}
    return {"topic": topic, "partitions": [
        {"partition": p.id, "leader": p.leader, "replicas": list(p.replicas), "isr": list(p.isrs),
         "start_offset": starts.get(p.id), "end_offset": ends.get(p.id)} for p in partitions],
        "configs": configs}


def describe_group(admin: TopicAdmin, group: str) -> dict[str, Any]:
    """State, members with their partitions, and per partition the committed offset and lag."""
    try:
        described = admin.client.describe_consumer_groups([group])[group].result(timeout=_TIMEOUT_S)
    except KafkaException as exc:
        raise ConfigurationError("group", f"cannot describe group {group!r}: {exc.args[0].str()}") from None
    members = [{"member": m.member_id, "client": m.client_id, "host": m.host,
                "partitions": sorted(f"{tp.topic}[{tp.partition}]" for tp in (m.assignment.topic_partitions
                                                                               if m.assignment else []))}
               for m in described.members]
    request = [ConsumerGroupTopicPartitions(group)]
    committed = admin.client.list_consumer_group_offsets(request)[group].result(timeout=_TIMEOUT_S)
    positions = [tp for tp in committed.topic_partitions if tp.offset >= 0]
    ends: dict[tuple[str, int], int] = {}
    for topic in {tp.topic for tp in positions}:
        mine = [TopicPartition(topic, tp.partition) for tp in positions if tp.topic == topic]
        ends.update({(topic, p): o for p, o in _offsets(admin, mine, OffsetSpec.latest()).items()})
    offsets = [{"topic": tp.topic, "partition": tp.partition, "committed": tp.offset,
                "end": ends.get((tp.topic, tp.partition)),
                "lag": max(0, ends[(tp.topic, tp.partition)] - tp.offset) if (tp.topic, tp.partition) in ends
                else None} for tp in sorted(positions, key=lambda tp: (tp.topic, tp.partition))]
    return {"group": group, "state": str(getattr(described.state, "name", described.state)),
            "protocol": _protocol(described), "members": members, "offsets": offsets,
            "total_lag": sum(o["lag"] or 0 for o in offsets)}


def _protocol(described: Any) -> str:
    # KIP-848 groups report their type; classic groups also name the assignor.
    group_type = getattr(described, "type", None)
    kind = str(getattr(group_type, "name", group_type or "")).lower() or "classic"
    assignor = getattr(described, "partition_assignor", "") or ""
    return f"{kind} ({assignor})" if assignor else kind


def _offsets(admin: TopicAdmin, partitions: list[TopicPartition], spec: OffsetSpec) -> dict[int, int]:
    """read_committed end (last stable) or start offsets, by partition."""
    if not partitions:
        return {}
    futures = admin.client.list_offsets({tp: spec for tp in partitions},
                                        isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=_TIMEOUT_S)
    return {tp.partition: future.result(timeout=_TIMEOUT_S).offset for tp, future in futures.items()}
