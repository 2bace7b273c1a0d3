"""Which passed-through librdkafka properties each client type reads.

Settings given with ``-X`` (or ``kafka:`` / ``AGENTFLEET_KAFKA_*``) reach every client the worker
makes: the consumer, the transactional producer, the restore consumers and the admin client.
librdkafka warns about a property of the other client type ("Configuration property
session.timeout.ms is a consumer property and will be ignored by this producer instance"), which
reads as if the user's setting were ignored. So each client gets only the properties it reads.

The scopes are librdkafka's own: the C/P column of its CONFIGURATION.md (commit 0093671), aliases
included. A property not listed here applies to both types and is always passed on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["CONSUMER_ONLY", "PRODUCER_ONLY", "RESERVED", "consumer_properties", "producer_properties"]

#: Properties the worker sets itself (worker/kafka/clients.py): letting a user override them would break a
#: stated guarantee, so settings refuse them (worker/config.py). The one list both use. (``group.protocol``
#: is refused too, with a pointer to the group-protocol setting that replaces it.)
RESERVED = frozenset({
    "enable.auto.commit", "enable.auto.offset.store", "isolation.level", "group.id",
    "partition.assignment.strategy", "enable.idempotence", "transactional.id",
})

CONSUMER_ONLY = frozenset({
    "auto.commit.enable", "auto.commit.interval.ms", "auto.offset.reset", "check.crcs",
    "consume.callback.max.messages", "consume_cb", "coordinator.query.interval.ms", "enable.auto.commit",
    "enable.auto.offset.store", "enable.partition.eof", "fetch.error.backoff.ms", "fetch.max.bytes",
    "fetch.message.max.bytes", "fetch.min.bytes", "fetch.queue.backoff.ms", "fetch.wait.max.ms", "group.id",
    "group.instance.id", "group.protocol", "group.protocol.type", "group.remote.assignor",
    "heartbeat.interval.ms", "isolation.level", "max.partition.fetch.bytes", "max.poll.interval.ms",
    "offset.store.method", "offset.store.path", "offset.store.sync.interval.ms", "offset_commit_cb",
    "partition.assignment.strategy", "queued.max.messages.kbytes", "queued.min.messages", "rebalance_cb",
    "session.timeout.ms",
})

PRODUCER_ONLY = frozenset({
    "acks", "batch.num.messages", "batch.size", "compression.codec", "compression.level", "compression.type",
    "delivery.report.only.error", "delivery.timeout.ms", "dr_cb", "dr_msg_cb", "enable.gapless.guarantee",
    "enable.idempotence", "linger.ms", "message.send.max.retries", "message.timeout.ms", "msg_order_cmp",
    "partitioner", "partitioner_cb", "produce.offset.report", "queue.buffering.backpressure.threshold",
    "queue.buffering.max.kbytes", "queue.buffering.max.messages", "queue.buffering.max.ms", "queuing.strategy",
    "request.required.acks", "request.timeout.ms", "retries", "sticky.partitioning.linger.ms",
    "transaction.timeout.ms", "transactional.id",
})


def consumer_properties(properties: Mapping[str, Any]) -> dict[str, Any]:
    """``properties`` without the producer-only ones."""
    return {name: value for name, value in properties.items() if name not in PRODUCER_ONLY}


def producer_properties(properties: Mapping[str, Any]) -> dict[str, Any]:
    """``properties`` without the consumer-only ones (also right for an admin client, which librdkafka
    runs as a producer-type handle)."""
    return {name: value for name, value in properties.items() if name not in CONSUMER_ONLY}
