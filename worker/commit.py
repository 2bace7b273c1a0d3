"""The commit protocol: how a batch of effects becomes durable.

Exactly-once (EOS v2): IDLE -> begin -> IN_TRANSACTION -> produce outputs, DLQ and changelog
records -> flush -> send input offsets with the consumer's group metadata -> commit -> IDLE.
An abortable error aborts and the same batch is retried; any other error is fatal (the
process exits and a restarted worker resumes from the last committed transaction).

At-least-once: produce, flush, then commit offsets through the consumer. A crash between the
two replays records whose outputs were already written.
"""

from __future__ import annotations

import enum
import logging
import time
from typing import Any, Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from worker.exceptions import WorkerError

logger = logging.getLogger(__name__)

MAX_CONSECUTIVE_TIMEOUTS = 3


class FatalCommitError(WorkerError):
    """The producer can no longer commit (fenced, fatal error, repeated time-outs)."""


class TxnState(enum.Enum):
    IDLE = "idle"
    IN_TRANSACTION = "in-transaction"
    FAILED = "failed"


class CommitProtocol:
    """Base: ``produce`` during a batch, then ``commit(offsets)``."""

    transactional = False

    def __init__(self, producer: Producer, consumer: Consumer, timeout_s: float = 30.0) -> None:
        self.producer = producer
        self.consumer = consumer
        self.timeout_s = timeout_s
        self.state = TxnState.IDLE

    def begin(self) -> None:
        self.state = TxnState.IN_TRANSACTION

    def produce(self, topic: str, value: bytes | None, key: bytes | None = None, partition: int | None = None,
                headers: list[tuple[str, bytes]] | None = None,
                on_delivery: Callable[[Any, Any], None] | None = None) -> None:
        while True:
            try:
                # partition -1 is librdkafka's "use the partitioner"; a None callback means none.
                self.producer.produce(topic, value, key, -1 if partition is None else partition, on_delivery,
                                      headers=headers)
                return
            except BufferError:
                self.producer.poll(0.05)  # local queue full: let deliveries drain

    @staticmethod
    def _offsets(offsets: dict[tuple[str, int], int]) -> list[TopicPartition]:
        return [TopicPartition(topic, p, o) for (topic, p), o in sorted(offsets.items())]

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        """Make the produced records and ``offsets`` durable (may run on the worker's committer thread,
        so it must not call the consumer)."""
        raise NotImplementedError

    def abort(self) -> None:
        self.state = TxnState.IDLE


class TransactionalCommit(CommitProtocol):
    """Exactly-once: one Kafka transaction per batch."""

    transactional = True

    def __init__(self, producer: Producer, consumer: Consumer, timeout_s: float = 30.0) -> None:
        super().__init__(producer, consumer, timeout_s)
        self._timeouts = 0
        self._group_metadata: Any = None
        #: The transactional call in progress and when it began (monotonic), None between calls: the
        #: worker cuts loose a close that librdkafka keeps blocked past its timeout.
        self.blocked_in: tuple[str, float] | None = None

    def init(self) -> None:
        """Fences any predecessor with our transactional.id and aborts its open transaction."""
        self._guard(lambda: self.producer.init_transactions(self.timeout_s), "init_transactions")

    def begin(self) -> None:
        """Begin a transaction (on the thread that polls the consumer).

        The group metadata is taken here, not in :meth:`commit`: confluent-kafka serialises calls on
        one consumer, so a committer thread asking for it would wait for the poll in progress, and a
        poll running a rebalance callback that waits for that commit never returns (measured: the
        group hung). The offsets committed are also the ones collected under this generation.
        """
        assert self.state is TxnState.IDLE, self.state
        self._group_metadata = self.consumer.consumer_group_metadata()
        self._guard(self.producer.begin_transaction, "begin_transaction")
        self.state = TxnState.IN_TRANSACTION

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        assert self.state is TxnState.IN_TRANSACTION, self.state
        remaining = self.producer.flush(self.timeout_s)
        if remaining:
            raise self._fail(f"{remaining} records still undelivered after {self.timeout_s}s")
        if offsets:
            metadata = self._group_metadata
            self._guard(lambda: self.producer.send_offsets_to_transaction(
                self._offsets(offsets), metadata, self.timeout_s), "send_offsets_to_transaction")
        self._guard(lambda: self.producer.commit_transaction(self.timeout_s), "commit_transaction")
        self._timeouts = 0
        self.state = TxnState.IDLE

    def abort(self) -> None:
        if self.state is TxnState.IN_TRANSACTION:
            self._guard(lambda: self.producer.abort_transaction(self.timeout_s), "abort_transaction")
        self.state = TxnState.IDLE

    def _fail(self, message: str) -> FatalCommitError:
        self.state = TxnState.FAILED
        return FatalCommitError(message)

    def _guard(self, call: Callable[[], Any], what: str) -> None:
        """Run a transactional call; classify its failure."""
        self.blocked_in = (what, time.monotonic())
        try:
            call()
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() == KafkaError._TIMED_OUT:
                # A zombie on some brokers sees time-outs instead of fencing: repeated = fatal.
                self._timeouts += 1
                if self._timeouts >= MAX_CONSECUTIVE_TIMEOUTS:
                    raise self._fail(f"{what} timed out {self._timeouts} times in a row: {error}") from exc
            if error.txn_requires_abort():
                raise AbortableCommitError(f"{what}: {error}", what) from exc
            if error.retriable() and what in ("commit_transaction", "send_offsets_to_transaction"):
                raise AbortableCommitError(f"{what} (retriable): {error}", what) from exc
            raise self._fail(f"{what} failed: {error}") from exc
        finally:
            self.blocked_in = None


class AbortableCommitError(WorkerError):
    """The transaction must be aborted; the same batch can be retried in a new one."""

    def __init__(self, message: str, call: str = "") -> None:
        super().__init__(message)
        #: The transactional call that failed: before commit_transaction, the transaction cannot have
        #: committed whatever becomes of its abort.
        self.call = call


class AtLeastOnceCommit(CommitProtocol):
    """Outputs first, then offsets; duplicates possible after a crash, never losses."""

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        remaining = self.producer.flush(self.timeout_s)
        if remaining:
            raise FatalCommitError(f"{remaining} records still undelivered after {self.timeout_s}s")
        if offsets:
            self.consumer.commit(offsets=self._offsets(offsets), asynchronous=False)
        self.state = TxnState.IDLE
