"""Restore a partition store from the changelog tail it has not seen yet.

Runs in a thread per partition so a long restore never stalls partitions that are ready.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from worker.state.store import PartitionStore

logger = logging.getLogger(__name__)

BATCH = 5000


class RestoreResult:
    def __init__(self, store: PartitionStore, records: int, seconds: float, rebuilt: bool) -> None:
        self.store = store
        self.records = records
        self.seconds = seconds
        self.rebuilt = rebuilt


def restore_partition(path: Path, changelog_topic: str, partition: int, consumer_config: dict[str, Any],
                      timeout_s: float = 300.0, cancelled: Any = None) -> RestoreResult:
    """Open (or rebuild) the store at ``path`` and apply changelog records past its offset."""
    started = time.monotonic()
    store, rebuilt = PartitionStore.open_or_rebuild(path)
    consumer = Consumer({**consumer_config, "enable.partition.eof": True, "enable.auto.commit": False,
                         "isolation.level": "read_committed"})
    records = 0
    try:
        tp = TopicPartition(changelog_topic, partition)
        low, high = consumer.get_watermark_offsets(tp, timeout=10)
        start = store.changelog_offset() + 1
        if start > high:
            # The store claims more than the changelog holds (topic recreated?): start over.
            logger.warning("store %s is ahead of %s[%d] (%d > %d); rebuilding", path, changelog_topic,
                           partition, start, high)
            store.wipe()
            rebuilt = True
            start = 0
        start = max(start, low)
        if start >= high:
            return RestoreResult(store, 0, time.monotonic() - started, rebuilt)
        consumer.assign([TopicPartition(changelog_topic, partition, start)])
        pending: dict[bytes, bytes | None] = {}
        last = start - 1
        deadline = time.monotonic() + timeout_s
        done = False
        while not done:
            if time.monotonic() > deadline:
                raise TimeoutError(f"restore of {changelog_topic}[{partition}] exceeded {timeout_s}s")
            if cancelled is not None and cancelled.is_set():
                break
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        done = True
                        break
                    raise RuntimeError(f"restore of {changelog_topic}[{partition}]: {err}")
                pending[bytes(msg.key())] = msg.value()
                last = msg.offset()
                records += 1
                if msg.offset() >= high - 1:
                    done = True
                    break
            if len(pending) >= BATCH:
                store.apply(pending, last)
                pending = {}
        if pending:
            store.apply(pending, last)
        return RestoreResult(store, records, time.monotonic() - started, rebuilt)
    finally:
        consumer.close()
