"""What the broker says about a topic: offsets by isolation level, replication, everything in it.

Tests of what only a real broker shows (compaction, transaction time-outs, retention, replication)
observe these instead of the workers, so each wait is a bounded poll on the broker's own state.
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Message,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

REQUEST_TIMEOUT_S = 15.0


def admin_client(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def end_offsets(admin: AdminClient, topic: str, partitions: int, isolation: str = "read_uncommitted") -> dict[int, int]:
    """Per partition: the high watermark (read_uncommitted) or the last stable offset (read_committed).

    The two differ exactly while a transaction that wrote to the partition is open.
    """
    level = IsolationLevel.READ_COMMITTED if isolation == "read_committed" else IsolationLevel.READ_UNCOMMITTED
    return _list_offsets(admin, topic, partitions, OffsetSpec.latest(), level)


def log_start_offsets(admin: AdminClient, topic: str, partitions: int) -> dict[int, int]:
    """Per partition: the first offset still on the broker (the low watermark)."""
    return _list_offsets(admin, topic, partitions, OffsetSpec.earliest(), IsolationLevel.READ_UNCOMMITTED)


def _list_offsets(admin: AdminClient, topic: str, partitions: int, spec: OffsetSpec,
                  level: IsolationLevel) -> dict[int, int]:
    futures = admin.list_offsets({TopicPartition(topic, p): spec for p in range(partitions)}, isolation_level=level,
                                 request_timeout=REQUEST_TIMEOUT_S)
    return {tp.partition: future.result(timeout=REQUEST_TIMEOUT_S).offset for tp, future in futures.items()}


def open_transaction_partitions(admin: AdminClient, topic: str, partitions: int) -> list[int]:
    """Partitions where an open transaction holds records back from read_committed readers."""
    stable = end_offsets(admin, topic, partitions, "read_committed")
    high = end_offsets(admin, topic, partitions)
    return [p for p in range(partitions) if stable[p] < high[p]]


def committed_offsets(admin: AdminClient, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets, waiting for any transaction that commits offsets to end."""
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(partitions)])
    future = admin.list_consumer_group_offsets([request], require_stable=True,
                                               request_timeout=REQUEST_TIMEOUT_S)[group]
    return {tp.partition: tp.offset for tp in future.result(timeout=REQUEST_TIMEOUT_S).topic_partitions}


def replication_factor(admin: AdminClient, topic: str) -> int:
    """The smallest replica count among the topic's partitions."""
    description = admin.describe_topics(TopicCollection([topic]), request_timeout=REQUEST_TIMEOUT_S)[topic]
    return min(len(p.replicas) for p in description.result(timeout=REQUEST_TIMEOUT_S).partitions)


def under_replicated_partitions(admin: AdminClient) -> int | None:
    """Partitions of every topic, internal ones included, with fewer in-sync replicas than replicas;
    None when no broker answered the metadata request in time (right after a node dies, the client
    may still be waiting on it): unknown, not zero."""
    try:  # a short timeout: the caller polls, and a request stuck on the dead node should not hold it
        metadata = admin.list_topics(timeout=3)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError._TIMED_OUT:
            raise
        return None
    return sum(1 for topic in metadata.topics.values() for p in topic.partitions.values()
               if len(p.isrs) < len(p.replicas))


def read_to_end(bootstrap: str, topic: str, partitions: int, isolation: str = "read_committed",
                timeout_s: float = 60.0) -> list[Message]:
    """Every record of the topic, from the log start to the end each partition reports on the first fetch.

    The end is the high watermark, or for read_committed the last stable offset; the read stops at the
    partition EOF events that mark it, so no record count needs to be known (compacted topics).
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "isolation.level": isolation, "fetch.wait.max.ms": 10,
                         "enable.partition.eof": True})
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        records: list[Message] = []
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(at_end) < partitions:
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: partitions {sorted(set(range(partitions)) - at_end)} "
                                     f"not read to the end within {timeout_s}s")
            for msg in consumer.consume(num_messages=1000, timeout=0.2):
                error = msg.error()
                if error is None:
                    records.append(msg)
                elif error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(int(msg.partition()))  # type: ignore[arg-type] # set on every partition event
                else:
                    raise AssertionError(f"{topic}: {error}")
        return records
    finally:
        consumer.close()



def delete_records_before(admin: AdminClient, topic: str, offsets: dict[int, int]) -> dict[int, int]:
    """Move each partition's log start to ``offsets`` (what retention does, but now); returns the new starts."""
    futures = admin.delete_records([TopicPartition(topic, p, o) for p, o in offsets.items()],
                                   request_timeout=REQUEST_TIMEOUT_S, operation_timeout=REQUEST_TIMEOUT_S)
    return {tp.partition: future.result(timeout=REQUEST_TIMEOUT_S).low_watermark for tp, future in futures.items()}
