"""Approvals on Kafka: parked runs' requests out to ``<app-id>-approvals``, decisions in from ``<app-id>-decisions``.

Both topics have the state topic's partition count, and a key's request and decisions live on its
state partition (the request names it; the operator commands write decisions there). The owner of a
state partition reads the same partition of the decisions topic by assignment, once the partition's
state is restored, from the offset the group committed for it. That offset is committed in the
transaction that commits the resumed run's state (``send_offsets_to_transaction`` takes any
partition), so a decision is applied exactly once: after a crash it is read again only if its
effects were not committed, and a decision whose request is no longer parked is skipped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition
from pydantic import ValidationError

from agentplan import ApprovalDecisionEvent, Engine
from worker.checkpoint.checkpoint import DeadLetter
from worker.config import WorkerSettings
from worker.exceptions import ConfigurationError
from worker.kafka.admin import TopicAdmin
from worker.offsets import OffsetTracker
from worker.records import RecordMeta, position

__all__ = ["DecisionReader", "decision_record", "prepare_approval_topics"]

logger = logging.getLogger(__name__)

COMMITTED_LOOKUP_TIMEOUT_S = 10.0
# Decisions read per loop round. Not bounded by the in-flight window: a decision finishes a parked record,
# so a window full of parked runs must still let decisions in.
DECISIONS_PER_ROUND = 500


def prepare_approval_topics(admin: TopicAdmin, settings: WorkerSettings, partitions: int) -> None:
    """Create the approvals and decisions topics (start-up); both must match the state topic's partitions."""
    for topic in (settings.approvals_topic, settings.decisions_topic):
        count = admin.ensure_topic(topic, partitions, replication_factor=settings.replication_factor)
        if count != partitions:
            raise ConfigurationError("approvals", f"topic {topic!r} has {count} partitions but the state topic "
                                                  f"{settings.state_topic!r} has {partitions}; they must match")


def decision_record(request_id: str, approved: bool, decided_by: str = "", comment: str = "",
                    data: Any = None) -> bytes:
    """A decision's value on the decisions topic (keyed by the request's key, on its partition)."""
    return json.dumps({"request_id": request_id, "approved": approved, "decided_by": decided_by,
                       "comment": comment, "data": data}).encode()


class DecisionReader:
    """Reads the decisions partitions of the state partitions this worker owns and delivers them to the engine."""

    def __init__(self, settings: WorkerSettings, consumer_config: dict[str, Any],
                 offsets_reader_config: dict[str, Any], engine: Engine, tracker: OffsetTracker,
                 dead_letter: Callable[[DeadLetter], None]) -> None:
        self.topic = settings.decisions_topic
        self._consumer = Consumer(consumer_config)
        self._offsets_reader_config = offsets_reader_config
        self._engine = engine
        self._tracker = tracker
        self._dead_letter = dead_letter
        self.assigned: set[int] = set()

    def sync(self, ready: set[int]) -> None:
        """Follow the ready state partitions: read each one's decisions from the group's committed offset."""
        new = ready - self.assigned
        if not new:
            return
        reader = Consumer(self._offsets_reader_config)
        try:
            committed = reader.committed([TopicPartition(self.topic, p) for p in sorted(new)],
                                         timeout=COMMITTED_LOOKUP_TIMEOUT_S)
        finally:
            reader.close()
        starts = [TopicPartition(self.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
                  for tp in committed]
        self._consumer.incremental_assign(starts)
        self.assigned |= new
        logger.info("reading decisions of %s from %s", self.topic, {tp.partition: tp.offset for tp in starts})

    def drop(self, partitions: set[int]) -> None:
        """Stop reading partitions whose state left this worker (their next owner reads them)."""
        gone = partitions & self.assigned
        if not gone:
            return
        self._consumer.incremental_unassign([TopicPartition(self.topic, p) for p in gone])
        for p in gone:
            self._tracker.drop((self.topic, p))
        self.assigned -= gone

    def poll(self) -> int:
        """Deliver the decisions that arrived; returns how many records were read."""
        if not self.assigned:
            return 0
        messages = self._consumer.consume(num_messages=DECISIONS_PER_ROUND, timeout=0)
        for message in messages:
            self._on_message(message)
        return len(messages)

    def _on_message(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                logger.warning("decisions consumer error: %s", error)
            return
        topic, partition, offset = position(message)
        if partition not in self.assigned:
            return  # fetched before a drop
        self._tracker.add((topic, partition), offset)
        key, value = message.key(), message.value()
        meta = RecordMeta(topic, partition, offset, message.timestamp()[1], key or b"")
        try:
            if not key:
                raise ValueError("a decision needs the key of the request it answers")
            decision = ApprovalDecisionEvent.model_validate_json(value or b"")
        except (ValueError, ValidationError) as exc:
            self._dead_letter(DeadLetter(meta, "invalid-decision", exc, key, value))
            return
        self._engine.deliver((partition, key), decision, meta)

    def close(self) -> None:
        self._consumer.close()
