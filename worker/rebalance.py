"""The partitions this worker owns: taking them on (restoring their state first) and handing them over.

Rebalance callbacks run inside the consumer's poll, on the loop thread, so they never race a commit:
a revoke settles the checkpoint in flight and commits everything finished (hand-over), a loss only
settles (the partitions already belong to someone else) and drops the rest. Restores run in threads;
a stateful partition stays paused (:class:`PauseReason.RESTORING`) until its store caught up with
the changelog, and the records fetched meanwhile wait in its buffer.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from confluent_kafka import Consumer, Message, TopicPartition

from agentplan import Engine
from agentplan.limits import endpoint_limits
from worker.checkpoint.checkpointer import Checkpointer
from worker.checkpoint.producer import FatalCommitError
from worker.config import WorkerSettings
from worker.exceptions import WorkerError
from worker.kafka.clients import ClientConfigs
from worker.kafka.retention import check_retention_gaps
from worker.observability.metrics import WorkerMetrics
from worker.offsets import OffsetTracker
from worker.processing.hot_keys import HotKeys
from worker.processing.pausing import PauseReason, PausingManager
from worker.records import EngineKey
from worker.state.restore import restore_partition
from worker.state.store import PartitionStore

__all__ = ["OwnedPartition", "Rebalancer"]

logger = logging.getLogger(__name__)

RESTORE_TIMEOUT_S = 600.0
TopicPart = tuple[str, int]


@dataclass
class OwnedPartition:
    topic: str
    number: int
    stateful: bool = True
    records_in: Any = None  # the partition's records-in counter child, looked up once
    store: PartitionStore | None = None
    ready: bool = False
    buffered: list[Message] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)


class Rebalancer:
    def __init__(self, settings: WorkerSettings, clients: ClientConfigs, metrics: WorkerMetrics, engine: Engine,
                 tracker: OffsetTracker, pausing: PausingManager, hot_keys: HotKeys, checkpointer: Checkpointer,
                 dispatch: Callable[[Message], None], fail: Callable[[WorkerError], None]) -> None:
        self.settings = settings
        self.clients = clients
        self.metrics = metrics
        self.engine = engine
        self.tracker = tracker
        self.pausing = pausing
        self.hot_keys = hot_keys
        self.checkpointer = checkpointer
        self._dispatch = dispatch
        self._fail = fail
        self.partitions: dict[TopicPart, OwnedPartition] = {}
        self.partition_count = 0  # of the keyed topic, set at start-up: the denominator of the rate share
        self.on_drop: list[Callable[[set[int]], None]] = []  # state partitions leaving (e.g. their decisions)

    def _share_rates(self) -> None:
        """Fleet-wide model rate limits are split by partition ownership (agentplan.limits): no coordination."""
        if self.partition_count:
            owned = sum(1 for topic, _ in self.partitions if topic == self.settings.state_topic)
            endpoint_limits.set_share(owned, self.partition_count)

    def stores(self) -> dict[int, PartitionStore | None]:
        """The state stores of the stateful partitions this worker owns, by partition number."""
        state_topic = self.settings.state_topic
        return {number: part.store for (topic, number), part in self.partitions.items() if topic == state_topic}

    def store_of(self, partition: int) -> PartitionStore | None:
        part = self.partitions.get((self.settings.state_topic, partition))
        return None if part is None else part.store

    def ready_state_partitions(self) -> set[int]:
        state_topic = self.settings.state_topic
        return {number for (topic, number), part in self.partitions.items() if topic == state_topic and part.ready}

    @property
    def restoring(self) -> int:
        return sum(1 for p in self.partitions.values() if not p.ready)

    # -- callbacks ------------------------------------------------------------------------------------
    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances_total.labels("assigned").inc()
        if not partitions:
            return
        state_topic = self.settings.state_topic
        for tp in partitions:
            part = OwnedPartition(tp.topic, tp.partition, stateful=tp.topic == state_topic,
                                  records_in=self.metrics.records_in_total.labels(tp.topic, str(tp.partition)))
            self.partitions[(tp.topic, tp.partition)] = part
            if part.stateful:
                asyncio.get_running_loop().create_task(self._restore(part))
            else:
                part.ready = True  # re-keying needs no state
        self.pausing.assign([(tp.topic, tp.partition) for tp in partitions if tp.topic == state_topic],
                            PauseReason.RESTORING)
        self.pausing.assign((tp.topic, tp.partition) for tp in partitions if tp.topic != state_topic)
        self.metrics.assigned_partitions.set(len(self.partitions))
        self._share_rates()
        logger.info("assigned %s", [f"{tp.topic}[{tp.partition}]" for tp in partitions])
        # Records deleted before this group read them: logged and counted (librdkafka only skips them).
        check_retention_gaps(self.clients.offsets_reader(), partitions, self.metrics)

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances_total.labels("revoked").inc()
        numbers = {(tp.topic, tp.partition) for tp in partitions}
        logger.info("revoking %s", sorted(numbers))
        try:
            self.checkpointer.commit()  # hand over everything that finished
        except FatalCommitError:
            logger.exception("final commit before revocation failed")
        self.drop(numbers)

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances_total.labels("lost").inc()
        numbers = {(tp.topic, tp.partition) for tp in partitions}
        logger.warning("lost %s; their uncommitted work is dropped", sorted(numbers))
        try:
            self.checkpointer.settle_in_flight()  # callbacks never interleave with a commit
        except FatalCommitError:
            logger.exception("the transaction in flight when partitions were lost failed")
        self.drop(numbers)
        self.checkpointer.request_renewal()

    # -- restore ---------------------------------------------------------------------------------------
    async def _restore(self, part: OwnedPartition) -> None:
        s = self.settings
        path = s.state_dir / s.app_id / str(part.number)
        self.metrics.restoring_partitions.inc()
        try:
            result = await asyncio.to_thread(restore_partition, path, s.changelog_topic, part.number,
                                             self.clients.restore_consumer(), RESTORE_TIMEOUT_S, part.cancelled)
        except Exception as exc:
            logger.exception("restore of partition %d failed", part.number)
            self._fail(exc if isinstance(exc, WorkerError) else WorkerError(
                f"restore of partition {part.number} failed: {exc}"))
            return
        finally:
            self.metrics.restoring_partitions.dec()
        if self.partitions.get((part.topic, part.number)) is not part or part.cancelled.is_set():
            result.store.close()  # revoked while restoring
            return
        part.store = result.store
        part.ready = True
        self.metrics.restore_records_total.inc(result.records)
        self.metrics.restore_duration_seconds.observe(result.seconds)
        logger.info("partition %d ready: restored %d changelog records in %.2fs%s", part.number, result.records,
                    result.seconds, " (store rebuilt)" if result.rebuilt else "")
        buffered, part.buffered = part.buffered, []
        for message in buffered:
            self._dispatch(message)
        self.pausing.resume([(part.topic, part.number)], PauseReason.RESTORING)

    # -- hand-over --------------------------------------------------------------------------------------
    def drop(self, numbers: set[TopicPart]) -> None:
        """Forget partitions and everything pending for them; their next owner redoes it from the last commit."""
        state_parts = {p for topic, p in numbers if topic == self.settings.state_topic}
        self.hot_keys.drop(numbers, state_parts)
        self.engine.cancel_keys(lambda key: cast(EngineKey, key)[0] in state_parts)
        self.checkpointer.discard(numbers, state_parts)
        for hook in self.on_drop:
            hook(state_parts)
        self.pausing.forget(numbers)
        for number in numbers:
            self.tracker.drop(number)
            part = self.partitions.pop(number, None)
            if part is not None:
                part.cancelled.set()
                self._close(part)
        self.metrics.assigned_partitions.set(len(self.partitions))
        self._share_rates()

    def close_all(self) -> None:
        for part in list(self.partitions.values()):
            part.cancelled.set()
            self._close(part)

    @staticmethod
    def _close(part: OwnedPartition) -> None:
        if part.store is not None:
            part.store.close()
            part.store = None
