"""The one class that owns the worker's producer, and the one place its failures are classified.

Exactly-once (:class:`TransactionalProducer`): every checkpoint is a Kafka transaction (EOS v2,
input offsets sent with the consumer's group metadata). At-least-once (:class:`AtLeastOnceProducer`):
the same steps without a transaction; offsets are committed through the consumer after the flush, so
a crash between the two replays records whose outputs were written.

Classification: a failure the transaction survives by aborting is an :class:`AbortableCommitError`
(the checkpoint's batch is retried); anything else is a :class:`FatalCommitError` (the worker exits
and a restarted worker resumes from the last committed transaction).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from worker.exceptions import WorkerError

__all__ = ["AbortableCommitError", "AtLeastOnceProducer", "CheckpointProducer", "FatalCommitError",
           "TransactionalProducer", "MAX_CONSECUTIVE_TIMEOUTS"]

logger = logging.getLogger(__name__)

MAX_CONSECUTIVE_TIMEOUTS = 3
Offsets = dict[tuple[str, int], int]


class FatalCommitError(WorkerError):
    """The producer can no longer commit (fenced, fatal error, repeated time-outs)."""


class AbortableCommitError(WorkerError):
    """The transaction must be aborted; the same batch can be retried in a new one."""

    def __init__(self, message: str, call: str = "") -> None:
        super().__init__(message)
        #: The call that failed. Before commit_transaction the transaction cannot have committed,
        #: whatever becomes of its abort.
        self.call = call

    @property
    def may_have_committed(self) -> bool:
        return self.call == "commit_transaction"


def classify(error: KafkaError, call: str, consecutive_timeouts: int) -> AbortableCommitError | FatalCommitError:
    """What a failed producer call means for the transaction."""
    if error.code() == KafkaError._TIMED_OUT and consecutive_timeouts >= MAX_CONSECUTIVE_TIMEOUTS:
        # A zombie on some brokers sees time-outs instead of fencing: repeated means fatal.
        return FatalCommitError(f"{call} timed out {consecutive_timeouts} times in a row: {error}")
    if error.txn_requires_abort():
        return AbortableCommitError(f"{call}: {error}", call)
    if error.retriable() and call in ("commit_transaction", "send_offsets_to_transaction"):
        return AbortableCommitError(f"{call} (retriable): {error}", call)
    return FatalCommitError(f"{call} failed: {error}")


class CheckpointProducer:
    """The steps of a checkpoint, as broker calls: begin, produce, flush, send offsets, commit, abort."""

    transactional = False

    def __init__(self, make_producer: Callable[[], Producer], consumer: Consumer, timeout_s: float = 30.0) -> None:
        self._make_producer = make_producer
        self.producer = make_producer()
        self.consumer = consumer
        self.timeout_s = timeout_s

    def init(self) -> None:
        """Ready the producer for its first checkpoint."""

    def begin(self) -> None:
        """Open a checkpoint (on the thread that polls the consumer)."""

    def produce(self, topic: str, value: bytes | None, key: bytes | None = None, partition: int | None = None,
                headers: Any = None,
                on_delivery: Callable[[Any, Any], None] | None = None) -> None:
        while True:
            try:
                # partition -1 is librdkafka's "use the partitioner"; a None callback means none.
                self.producer.produce(topic, value, key, -1 if partition is None else partition, on_delivery,
                                      headers=headers)
                return
            except BufferError:
                self.producer.poll(0.05)  # local queue full: let deliveries drain

    def flush(self) -> None:
        """Wait until every record produced is acknowledged (serves delivery reports)."""
        remaining = self.producer.flush(self.timeout_s)
        if remaining:
            raise FatalCommitError(f"{remaining} records still undelivered after {self.timeout_s}s")

    def send_offsets(self, offsets: Offsets) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        """Make what was produced (and the offsets sent) visible to read_committed readers."""

    def abort(self) -> None:
        """Abandon the open checkpoint; its records are never visible."""

    def close(self, timeout_s: float = 10.0) -> None:
        self.producer.flush(timeout_s)

    @staticmethod
    def _partitions(offsets: Offsets) -> list[TopicPartition]:
        return [TopicPartition(topic, p, o) for (topic, p), o in sorted(offsets.items())]


class AtLeastOnceProducer(CheckpointProducer):
    """Outputs first, then offsets through the consumer; duplicates possible after a crash, never losses."""

    def send_offsets(self, offsets: Offsets) -> None:
        if offsets:
            self.consumer.commit(offsets=self._partitions(offsets), asynchronous=False)


class TransactionalProducer(CheckpointProducer):
    """Exactly-once: one Kafka transaction per checkpoint."""

    transactional = True

    def __init__(self, make_producer: Callable[[], Producer], consumer: Consumer, timeout_s: float = 30.0) -> None:
        super().__init__(make_producer, consumer, timeout_s)
        self._timeouts = 0
        self._group_metadata: Any = None
        self.in_transaction = False
        #: The transactional call in progress and when it began (monotonic), None between calls: a call
        #: librdkafka keeps blocked past its timeout is cut loose (worker/checkpoint/checkpointer.py).
        self.blocked_in: tuple[str, float] | None = None
        # Held while a call is checked and begun, and while this producer is cut loose: the two exclude
        # each other, so a cut-loose producer never begins another call (see cut_loose).
        self._starting = threading.Lock()
        self._cut_loose = False

    def init(self) -> None:
        """Fences any predecessor with our transactional.id and aborts its open transaction."""
        self._guard(lambda: self.producer.init_transactions(self.timeout_s), "init_transactions")

    def begin(self) -> None:
        """The group metadata is taken here, not when offsets are sent: confluent-kafka serialises calls
        on one consumer, so a committer thread asking for it would wait for the poll in progress, and a
        poll running a rebalance callback that waits for that commit never returns (measured: the group
        hung). The offsets committed are also the ones collected under this generation."""
        self._group_metadata = self.consumer.consumer_group_metadata()
        self._guard(self.producer.begin_transaction, "begin_transaction")
        self.in_transaction = True

    def send_offsets(self, offsets: Offsets) -> None:
        if offsets:
            metadata = self._group_metadata
            self._guard(lambda: self.producer.send_offsets_to_transaction(
                self._partitions(offsets), metadata, self.timeout_s), "send_offsets_to_transaction")

    def commit(self) -> None:
        self._guard(lambda: self.producer.commit_transaction(self.timeout_s), "commit_transaction")
        self.in_transaction = False
        self._timeouts = 0

    def abort(self) -> None:
        if self.in_transaction:  # a renewed producer has nothing open: its init aborted the old transaction
            self._guard(lambda: self.producer.abort_transaction(self.timeout_s), "abort_transaction")
            self.in_transaction = False

    def renewed(self) -> TransactionalProducer:
        """A fresh producer under the same transactional.id, initialised; this one is fenced by it.

        Its init_transactions fences this one and aborts this one's open transaction, if any. Used when
        librdkafka keeps a dead group coordinator cached after an outage or a node failure
        (confluentinc/librdkafka#5511): this producer's next send_offsets_to_transaction would hang. A new
        object, not this one refitted: a committer thread still blocked in this one goes on with it when
        it returns, and must meet a fenced producer, never the new one's open transaction.
        """
        logger.info("starting a fresh transactional producer")
        fresh = type(self)(self._make_producer, self.consumer, self.timeout_s)
        fresh.init()
        return fresh

    def cut_loose(self, call: str) -> bool:
        """Give up on this producer while it is blocked in ``call``: it begins no call after this one.

        The committer thread blocked in ``call`` goes on when librdkafka returns, and its next call would be
        commit_transaction: were EndTxn to reach the coordinator before the fresh producer's InitProducerId
        fences this one, the transaction would commit and the retried batch commit again (measured on 3
        Apache Kafka nodes, a node SIGKILLed: send_offsets_to_transaction blocked past the limit, then
        returned; 31 duplicates). False when ``call`` has returned meanwhile: the close goes on, wait for it.
        """
        with self._starting:
            if self.blocked_in is None or self.blocked_in[0] != call:
                return False
            self._cut_loose = True
            return True

    def _guard(self, call: Callable[[], Any], what: str) -> None:
        """Run a transactional call; classify its failure."""
        with self._starting:
            if self._cut_loose:
                logger.warning("a producer cut loose from a stuck close got its answer after all; it does not "
                               "call %s (its transaction is fenced and its batch retried)", what)
                # No call named: this one was never sent, so it cannot have committed anything.
                raise AbortableCommitError(f"{what}: not called, this producer was cut loose")
            self.blocked_in = (what, time.monotonic())
        try:
            call()
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() == KafkaError._TIMED_OUT:
                self._timeouts += 1
            raise classify(error, what, self._timeouts) from exc
        finally:
            self.blocked_in = None
