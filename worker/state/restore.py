"""Restore a partition store from the changelog tail it has not seen yet.

Runs in a thread per partition so a long restore never stalls partitions that are ready.

The restore never trusts the end offset a ListOffsets request reports: the embedded Tansu
broker answers it with the first offset of the last batch + 1 (so a batched, non-transactional
changelog looked 1 record long) and with 0 to read_committed readers while a transaction is
open. Fetch responses carry the right end (high watermark, last stable offset), so the restore
reads until the consumer reports partition EOF, and decides whether the store is ahead of the
changelog by re-reading the last record the store applied.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    TopicPartition,
)

from worker.exceptions import StateRestoreError
from worker.state.store import PartitionStore

logger = logging.getLogger(__name__)

BATCH = 5000  # distinct keys per RocksDB write batch
CONSUME_BATCH = 10_000  # records per consume() call: fewer calls into librdkafka per record
# consume() returns a partial batch only when its timeout expires, so the end of the changelog
# (partition EOF arrives alone) costs up to this much; an idle wait wakes up this often.
POLL_S = 0.01
# librdkafka pauses fetching for fetch.queue.backoff.ms (default 1 s) whenever its local queue holds
# queued.min.messages; a restore drains that queue quickly, so resume fetching sooner. An empty fetch
# (possible on the embedded broker) likewise waits fetch.error.backoff.ms (default 500 ms).
FETCH_TUNING = {"fetch.queue.backoff.ms": 20, "fetch.error.backoff.ms": 20}
# Kafka aborts a transaction left open for transaction.timeout.ms (the worker's default: 10 s) at
# its next abort check (every 10 s by default); only then does the last stable offset move on.
OPEN_TRANSACTION_WAIT_S = 30.0


class RestoreResult:
    def __init__(self, store: PartitionStore, records: int, seconds: float, rebuilt: bool) -> None:
        self.store = store
        self.records = records
        self.seconds = seconds
        self.rebuilt = rebuilt


def restore_partition(path: Path, changelog_topic: str, partition: int, consumer_config: dict[str, Any],
                      timeout_s: float = 300.0, cancelled: threading.Event | None = None,
                      open_transaction_wait_s: float = OPEN_TRANSACTION_WAIT_S) -> RestoreResult:
    """Open (or rebuild) the store at ``path`` and apply the committed changelog records past its offset.

    The store is wiped only when the changelog really ends before the store's offset (topic deleted
    and recreated, or truncated). When the store's last record lies behind an open transaction
    (read_committed cannot see it yet), the restore waits up to ``open_transaction_wait_s`` for the
    transaction to end, then keeps the store as it is. Raises :class:`StateRestoreError` on a consumer
    error or when the whole restore takes longer than ``timeout_s``.
    """
    started = time.monotonic()
    store, rebuilt = PartitionStore.open_or_rebuild(path)
    consumer = Consumer({**FETCH_TUNING, **consumer_config, "enable.partition.eof": True, "enable.auto.commit": False,
                         "isolation.level": "read_committed", "auto.offset.reset": "error"})
    try:
        restore = _Restore(store, consumer, changelog_topic, partition, rebuilt)
        restore.run(started + timeout_s, timeout_s, cancelled, open_transaction_wait_s)
        return RestoreResult(store, restore.records, time.monotonic() - started, restore.rebuilt)
    except BaseException:
        store.close()
        raise
    finally:
        consumer.close()


class _Restore:
    """One pass over a changelog partition into a store; restarts from the beginning if the store is ahead."""

    def __init__(self, store: PartitionStore, consumer: Consumer, topic: str, partition: int,
                 rebuilt: bool) -> None:
        self.store = store
        self.consumer = consumer
        self.topic = topic
        self.partition = partition
        self.rebuilt = rebuilt
        self.records = 0
        self.name = f"{topic}[{partition}]"
        # The store's last applied changelog offset, until the changelog has been seen to hold it.
        self.unverified: int | None = None

    def run(self, deadline: float, timeout_s: float, cancelled: threading.Event | None,
            open_transaction_wait_s: float) -> None:
        # The low watermark is right on Tansu too; only the reported end is not.
        low, _ = self.consumer.get_watermark_offsets(TopicPartition(self.topic, self.partition), timeout=10)
        applied = self.store.changelog_offset()
        if applied >= 0 and applied >= low:
            # Re-read the last applied record: receiving it (or anything past it) proves the
            # changelog still holds it. Applying it again is a no-op.
            self.unverified = applied
            self._assign(applied)
        else:
            # An empty store, or records before the low watermark gone (retention): continue from there.
            self._assign(max(applied + 1, low))
        pending: dict[bytes, bytes | None] = {}
        last = -1
        silent_since = time.monotonic()
        while True:
            now = time.monotonic()
            if now > deadline:
                raise StateRestoreError(f"restore of {self.name} exceeded {timeout_s}s")
            if cancelled is not None and cancelled.is_set():
                break
            batch = self.consumer.consume(num_messages=CONSUME_BATCH, timeout=POLL_S)
            if not batch:
                if self.unverified is not None and self._behind_open_transaction(now - silent_since,
                                                                                 open_transaction_wait_s):
                    break
                continue
            silent_since = now
            if self.unverified is not None:
                batch = self._verify(batch)  # nothing is pending before the store's offset is verified
            records = batch
            if any(map(Message.error, batch)):  # rare: partition EOF, or a consumer error
                for event in (msg for msg in batch if msg.error() is not None):
                    if cast(KafkaError, event.error()).code() != KafkaError._PARTITION_EOF:
                        raise StateRestoreError(f"restore of {self.name}: {event.error()}")
                records = [msg for msg in batch if msg.error() is None]
            if records:  # C-level iteration: the per-record cost that bounds the restore rate
                pending.update(cast(Iterable[tuple[bytes, bytes | None]],
                                    zip(map(Message.key, records), map(Message.value, records))))
                self.records += len(records)
                last = cast(int, records[-1].offset())
            if records is not batch:
                break  # reached the end the fetches report: the high watermark, or the last stable offset
            if len(pending) >= BATCH:
                self._apply(pending, last)
                pending = {}
        if pending:
            self._apply(pending, last)

    def _apply(self, pending: dict[bytes, bytes | None], last: int) -> None:
        if None in pending:  # a keyless record cannot be state; the worker never writes one
            logger.warning("ignoring keyless records in %s", self.name)
            del pending[None]  # type: ignore[arg-type]
        self.store.apply(pending, last)

    def _assign(self, offset: int) -> None:
        self.consumer.assign([TopicPartition(self.topic, self.partition, offset)])

    def _verify(self, batch: list[Message]) -> list[Message]:
        """Check the first fetched records against the store's offset; wipe the store if it is ahead.

        Returns the records to apply (those past the store's offset).
        """
        applied = self.unverified
        assert applied is not None
        for index, msg in enumerate(batch):
            error = msg.error()
            if error is None:
                self.unverified = None
                return [m for m in batch[index:] if m.error() is not None or cast(int, m.offset()) > applied]
            if error.code() == KafkaError._PARTITION_EOF:
                if cast(int, msg.offset()) > applied:  # reached past the record (compacted away or filtered)
                    self.unverified = None
                    return batch[index:]
                self._rebuild(f"the changelog ends at {msg.offset()}")
                return []
            if error.code() in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE):
                self._rebuild(f"offset {applied} is out of range ({error.str()})")
                return []
            raise StateRestoreError(f"restore of {self.name}: {error}")
        return []

    def _behind_open_transaction(self, silent_s: float, wait_s: float) -> bool:
        """Nothing fetched at the store's offset: find out from the fetched high watermark why.

        Tansu answers a fetch past the end with an empty response (Kafka: offset out of range).
        A high watermark above the store's offset means the record exists but read_committed
        cannot see it: an open transaction starts before it. Returns True when the restore should
        stop waiting for that transaction and keep the store as it is.
        """
        applied = self.unverified
        assert applied is not None
        _, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, self.partition), cached=True)
        if high < 0:  # no fetch response yet
            return False
        if high <= applied:
            self._rebuild(f"the changelog ends at {high}")
            return False
        if silent_s < wait_s:
            return False
        logger.warning("%s: the store's last record (offset %d, high watermark %d) stayed behind an open "
                       "transaction for %.0fs; keeping the store as it is", self.name, applied, high, silent_s)
        return True

    def _rebuild(self, reason: str) -> None:
        logger.warning("store %s is ahead of %s (store offset %s, %s); rebuilding", self.store.path, self.name,
                       self.unverified, reason)
        self.store.wipe()
        self.rebuilt = True
        self.unverified = None
        self._assign(OFFSET_BEGINNING)
