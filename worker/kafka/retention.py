"""Input records that retention deleted before the group read them.

A group that stays away longer than an input topic's retention (or whose partition was trimmed
with delete-records) comes back to a committed offset below the partition's log start offset.
librdkafka then resets the position on its own: the fetch at the committed offset fails with
OFFSET_OUT_OF_RANGE and ``auto.offset.reset=earliest`` moves it to the log start. All the
application would see is one librdkafka line on stderr, without the number of records skipped.
So at assignment the worker compares the committed offset with the log start itself, and logs
and counts the gap.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from worker.observability.metrics import WorkerMetrics

logger = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 10.0

# Checks in flight: the event loop keeps only weak references to tasks.
_running: set[asyncio.Task[None]] = set()


@dataclass(frozen=True)
class RetentionGap:
    topic: str
    partition: int
    committed: int  # the group's committed offset: the next record it would have read
    log_start: int  # the partition's first offset still on the broker, where reading resumes

    @property
    def lost(self) -> int:
        return self.log_start - self.committed


def find_retention_gaps(consumer_config: dict[str, Any], partitions: list[TopicPartition],
                        timeout_s: float = CHECK_TIMEOUT_S) -> list[RetentionGap]:
    """The partitions whose committed offset (group ``consumer_config['group.id']``) is below the log start.

    Blocking; uses a consumer of its own that never joins the group, so the worker's consumer is not
    called from another thread. It reads committed offsets as read_committed, which waits until a
    transaction that commits offsets has ended, so an offset about to be committed is not taken for a gap.
    A partition without a committed offset has no gap: a new group starts at the log start by design.
    """
    consumer = Consumer({**consumer_config, "enable.auto.commit": False, "isolation.level": "read_committed"})
    try:
        committed = consumer.committed([TopicPartition(tp.topic, tp.partition) for tp in partitions],
                                       timeout=timeout_s)
        gaps = []
        for tp in committed:
            if tp.error is not None or tp.offset < 0:
                continue
            low, _high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
            if tp.offset < low:
                gaps.append(RetentionGap(tp.topic, tp.partition, tp.offset, low))
        return gaps
    finally:
        consumer.close()


def report_retention_gaps(gaps: list[RetentionGap], group: str, metrics: WorkerMetrics) -> None:
    for gap in gaps:
        logger.warning("input partition %s[%d]: committed offset %d is below the log start offset %d; %d records "
                       "were deleted by retention before group %s read them. Resuming from offset %d",
                       gap.topic, gap.partition, gap.committed, gap.log_start, gap.lost, group, gap.log_start)
        metrics.records_lost_to_retention_total.labels(gap.topic, str(gap.partition)).inc(gap.lost)


async def _check(consumer_config: dict[str, Any], partitions: list[TopicPartition], metrics: WorkerMetrics) -> None:
    group = str(consumer_config["group.id"])
    try:
        gaps = await asyncio.to_thread(find_retention_gaps, consumer_config, partitions)
    except KafkaException as exc:
        # Best effort: librdkafka resets the position anyway; only the report is missing.
        logger.warning("could not compare the committed offsets of %s with the log start: %s",
                       [f"{tp.topic}[{tp.partition}]" for tp in partitions], exc)
        return
    report_retention_gaps(gaps, group, metrics)


def check_retention_gaps(consumer_config: dict[str, Any], partitions: list[TopicPartition],
                         metrics: WorkerMetrics) -> None:
    """From a rebalance callback: check newly assigned partitions in a thread, report gaps on the loop.

    The check races nothing that matters: the group's committed offset for a partition can move only
    after this worker has fetched and processed records from it, several broker round trips later.
    """
    task = asyncio.get_running_loop().create_task(_check(consumer_config, list(partitions), metrics))
    _running.add(task)
    task.add_done_callback(_running.discard)
