"""When checkpoints are taken, and what happens after: the exactly-once protocol, top to bottom.

One checkpoint at a time. The main loop :meth:`~Checkpointer.start`s one, which collects and
produces on the loop thread and closes (send offsets and flush, commit: 4-18 ms on the broker) on the
committer thread while runs go on; :meth:`~Checkpointer.poll` settles it once the broker answered.
Everything else (rebalance callbacks, shutdown, producer renewal) settles the one in flight first
and then commits synchronously with :meth:`~Checkpointer.commit`, so nothing interleaves with a commit.

Settling is where each outcome is decided, in one place:
  committed -> post-commit: 1. input offsets marked committed, 2. stores written (in step with the
               changelog), 3. keys released to run their next records, 4. hot keys drained, 5. metrics;
  abortable -> abort (or fence with a fresh producer when the abort fails and the transaction cannot
               have committed) and put the batch back for the next checkpoint;
  fatal     -> raise: the worker exits; a restart resumes from the last committed transaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import wait as wait_for_future
from typing import cast

from agentplan import Engine, KeyDelta
from worker.checkpoint.checkpoint import Checkpoint, DeadLetter, Phase, Rekeyed, Topics
from worker.checkpoint.committer import Committer
from worker.checkpoint.producer import (
    AbortableCommitError,
    CheckpointProducer,
    FatalCommitError,
    TransactionalProducer,
)
from worker.exceptions import BrokerUnreachableError
from worker.offsets import OffsetTracker
from worker.records import EngineKey
from worker.state.store import PartitionStore

__all__ = ["Checkpointer", "Outcome"]

logger = logging.getLogger(__name__)

Outcome = AbortableCommitError | FatalCommitError | None
# How often a wait for the checkpoint in flight checks whether librdkafka keeps its close blocked, and
# how far past its own timeout commit_transaction may block (see stuck_call).
STUCK_CHECK_S = 0.5
STUCK_MARGIN_S = 10.0
# How long a call before EndTxn may block before its producer is fenced: first, and at most (the limit
# doubles after each fence, so a broker that is slow rather than failed still gets a commit through).
STUCK_FIRST_LIMIT_S = 2.0


class Checkpointer:
    """Takes checkpoints of the engine's finished work and the intake's dead letters and re-keyed records."""

    def __init__(self, producer: CheckpointProducer, engine: Engine, tracker: OffsetTracker, topics: Topics,
                 stores: Callable[[], Mapping[int, PartitionStore | None]], name_prefix: str,
                 transaction_timeout_s: float, broker_down: Callable[[], bool] = lambda: False,
                 on_committed: Callable[[Checkpoint], None] = lambda cp: None,
                 on_aborted: Callable[[Checkpoint, AbortableCommitError], None] = lambda cp, e: None,
                 bootstrap_servers: str = "", on_closed: Callable[[], None] = lambda: None) -> None:
        """``on_closed`` is called on the committer thread when a checkpoint's close returns (the main loop
        settles it at once instead of at its next poll)."""
        self.producer = producer
        self.engine = engine
        self.tracker = tracker
        self.topics = topics
        self._stores = stores
        self._name_prefix = name_prefix
        self._transaction_timeout_s = transaction_timeout_s
        self._broker_down = broker_down
        self._on_committed = on_committed
        self._on_aborted = on_aborted
        self._bootstrap = bootstrap_servers
        self._on_closed = on_closed
        self._retry: list[KeyDelta] = []  # deltas of aborted checkpoints, committed first next time
        self._retry_records = 0  # input records in the aborted checkpoints' retry
        self._dead_letters: list[DeadLetter] = []
        self._rekeyed: list[Rekeyed] = []
        self._seq = 0
        self._committer = Committer()
        self._in_flight: tuple[Checkpoint, Future[Outcome]] | None = None
        self._stuck_limit_s = min(STUCK_FIRST_LIMIT_S, transaction_timeout_s)
        self.renewal_requested = False
        self.committed = 0

    # -- intake ---------------------------------------------------------------------------------
    def dead_letter(self, letter: DeadLetter) -> None:
        self._dead_letters.append(letter)

    def rekey(self, record: Rekeyed) -> None:
        self._rekeyed.append(record)

    # -- taking checkpoints -------------------------------------------------------------------------
    @property
    def in_flight(self) -> bool:
        return self._in_flight is not None

    @property
    def collected_uncommitted(self) -> int:
        """Input records collected and not committed yet: the checkpoint in flight's, and an aborted one's
        waiting for their retry (the in-flight window bounds these plus the uncollected ones)."""
        in_flight = self._in_flight[0].records if self._in_flight is not None else 0
        return in_flight + self._retry_records

    def start(self) -> None:
        """Take a checkpoint; an exactly-once one closes on the committer thread (:meth:`poll` settles it)."""
        if not self.producer.transactional:
            self.commit()  # at-least-once commits offsets through the consumer: keep that on the loop thread
            return
        checkpoint = self._open()
        if checkpoint is not None:
            closing = self._committer.submit(checkpoint.close, self.producer)
            closing.add_done_callback(lambda _: self._on_closed())
            self._in_flight = (checkpoint, closing)

    def poll(self) -> bool:
        """Settle the checkpoint in flight if the broker answered (or its close is stuck); True while one is."""
        if self._in_flight is not None:
            checkpoint, closing = self._in_flight
            over, outcome = self._over(closing)
            if over:
                self._in_flight = None
                self._settle(checkpoint, outcome)
        return self._in_flight is not None

    def commit(self) -> None:
        """Commit every finished effect now and wait for it."""
        self.settle_in_flight()
        checkpoint = self._open()
        if checkpoint is not None:
            self._settle(checkpoint, checkpoint.close(self.producer))

    def settle_in_flight(self) -> None:
        if self._in_flight is not None:
            checkpoint, closing = self._in_flight
            self._in_flight = None
            self._settle(checkpoint, self._wait(closing))

    async def wait_in_flight(self) -> None:
        """Let the close in flight finish, or get stuck, without blocking the loop; the caller settles it."""
        if self._in_flight is None:
            return
        closing = asyncio.wrap_future(self._in_flight[1])
        while not closing.done() and self.stuck_call() is None:
            await asyncio.wait([closing], timeout=STUCK_CHECK_S)

    def _open(self) -> Checkpoint | None:
        """Collect every finished effect into a checkpoint and produce it; None when there is nothing to commit."""
        deltas = self._retry + self.engine.collect()
        letters, rekeyed = self._dead_letters, self._rekeyed
        self._retry, self._dead_letters, self._rekeyed = [], [], []
        records = len(letters) + len(rekeyed)
        for delta in deltas:
            for meta in delta.finished:
                if meta is not None:
                    self.tracker.collected((meta.topic, meta.partition), meta.offset)
                    records += 1
        for meta in [letter.meta for letter in letters] + [record.meta for record in rekeyed]:
            self.tracker.collected((meta.topic, meta.partition), meta.offset)
        self._retry_records = 0
        offsets = self.tracker.changed()
        if not deltas and not letters and not rekeyed and not offsets:
            return None
        self._seq += 1
        checkpoint = Checkpoint(f"{self._name_prefix}#{self._seq}", deltas, letters, rekeyed, offsets, self.topics,
                                records)
        try:
            checkpoint.produce(self.producer)
        except (AbortableCommitError, FatalCommitError) as exc:
            self._settle(checkpoint, exc)
            return None
        return checkpoint

    # -- settling --------------------------------------------------------------------------------------
    def _settle(self, checkpoint: Checkpoint, outcome: Outcome) -> None:
        if outcome is None:
            self._post_commit(checkpoint)
        elif isinstance(outcome, AbortableCommitError):
            self._abort(checkpoint, outcome)
        else:
            checkpoint.move(Phase.FAILED)
            if self._broker_down():
                raise BrokerUnreachableError(
                    f"Kafka at {self._bootstrap} became unreachable during transaction {checkpoint.name}, which "
                    f"cannot complete: {outcome}. Exiting; a restarted worker resumes from the last committed "
                    "transaction") from outcome
            raise outcome

    def _post_commit(self, checkpoint: Checkpoint) -> None:
        checkpoint.move(Phase.COMMITTED)
        self.tracker.commit(checkpoint.offsets)
        checkpoint.state.flush(self._stores())
        self.engine.release(checkpoint.deltas)
        checkpoint.move(Phase.SETTLED)
        self.committed += 1
        self._stuck_limit_s = min(STUCK_FIRST_LIMIT_S, self._transaction_timeout_s)
        self._on_committed(checkpoint)
        logger.debug("committed %s in %.3fs: %d keys, %d outputs, %d dead letters, offsets %s", checkpoint.name,
                     checkpoint.duration_s, len(checkpoint.deltas), checkpoint.outputs, len(checkpoint.dead_letters),
                     checkpoint.offsets)

    def _abort(self, checkpoint: Checkpoint, error: AbortableCommitError) -> None:
        """Abort, then retry the batch in the next checkpoint.

        When the abort itself fails fatally (measured on a 3-node cluster under load: records timed out
        while a node restarted, then abort_transaction failed with INVALID_TXN_STATE), a transaction that
        failed before commit_transaction cannot have committed, so a fresh producer (whose
        init_transactions aborts it) lets the batch be retried without exiting.
        """
        logger.warning("transaction %s aborted, retrying its batch: %s", checkpoint.name, error)
        try:
            self.producer.abort()
        except (AbortableCommitError, FatalCommitError) as abort_error:
            if error.may_have_committed:
                checkpoint.move(Phase.FAILED)
                raise FatalCommitError(f"{error}; then the abort failed: {abort_error}") from abort_error
            logger.warning("aborting the failed transaction failed too (%s); fencing it with a fresh producer",
                           abort_error)
            self.renew_producer()
        checkpoint.move(Phase.ABORTED)
        self._retry_records += checkpoint.records
        self._retry = checkpoint.deltas + self._retry
        self._dead_letters = checkpoint.dead_letters + self._dead_letters
        self._rekeyed = checkpoint.rekeyed + self._rekeyed
        self._on_aborted(checkpoint, error)

    # -- a close librdkafka keeps blocked ----------------------------------------------------------------
    def _wait(self, closing: Future[Outcome]) -> Outcome:
        """Wait for the close in flight; cut it loose once it is stuck (see :meth:`stuck_call`)."""
        while True:
            over, outcome = self._over(closing)
            if over:
                return outcome
            wait_for_future([closing], timeout=STUCK_CHECK_S)

    def _over(self, closing: Future[Outcome]) -> tuple[bool, Outcome]:
        """(True, its outcome) once the close is over: the broker answered, or it was stuck and is cut loose
        now; (False, None) while it goes on (a stuck call that returned meanwhile is not cut loose)."""
        if closing.done():
            return True, closing.result()
        stuck = self.stuck_call()
        if stuck is not None and (outcome := self._abandon(stuck)) is not None:
            return True, outcome
        return False, None

    def stuck_call(self) -> str | None:
        """The transactional call that has blocked the committer past any legitimate wait, if one has.

        librdkafka 2.16 can block send_offsets_to_transaction for good once the broker of the group
        coordinator fails: the dead coordinator stays cached, and the call's timeout is not enforced
        (confluentinc/librdkafka#5511, #5456). Measured on a 3-node cluster: every worker stopped
        committing when that node was SIGKILLed, and stayed stopped after it came back. Before EndTxn
        is sent, a transaction older than transaction.timeout.ms cannot commit any more (the
        coordinator aborts it), so that is the most a call before EndTxn may take. Fencing earlier is
        safe too (the transaction cannot have committed: the producer cut loose never begins
        commit_transaction, see TransactionalProducer.cut_loose) and only costs the batch's retry, and the fresh
        producer finds the new coordinator itself. So the first limit is STUCK_FIRST_LIMIT_S, doubled after
        each fence up to transaction.timeout.ms. Measured on 3 nodes under KIP-848, the coordinator's node
        SIGKILLed: 12.6 s of recovery at a 4 s first limit, 10.0 s at 2 s. commit_transaction
        gets its own timeout and a margin: past EndTxn the outcome is unknown.
        """
        producer = self.producer
        blocked = producer.blocked_in if isinstance(producer, TransactionalProducer) else None
        if blocked is None:
            return None
        call, since = blocked
        limit = producer.timeout_s + STUCK_MARGIN_S if call == "commit_transaction" else self._stuck_limit_s
        return call if time.monotonic() - since > limit else None

    def _abandon(self, call: str) -> AbortableCommitError | FatalCommitError | None:
        """Give up on a stuck close: fence its producer and retry the batch, or exit when the outcome is unknown.
        None when the call returned meanwhile: the close goes on and is waited for."""
        if call == "commit_transaction":
            # EndTxn may have reached the coordinator: the transaction may be committed, so a retry could
            # commit the batch twice. A restarted worker resumes from whatever was committed.
            return FatalCommitError("commit_transaction stayed blocked past its timeout; exiting")
        producer = self.producer
        if isinstance(producer, TransactionalProducer) and not producer.cut_loose(call):
            return None
        logger.error("%s has blocked the committer for over %gs (librdkafka keeps a failed group coordinator "
                     "cached: confluentinc/librdkafka#5511); fencing that producer with a fresh one and retrying "
                     "the batch", call, self._stuck_limit_s)
        self._stuck_limit_s = min(2 * self._stuck_limit_s, self._transaction_timeout_s)
        self._committer.shutdown()  # its thread stays blocked in librdkafka, with the fenced producer
        self._committer = Committer()
        # init_transactions under the same transactional.id aborts the stuck transaction: it cannot commit.
        self.renew_producer()
        return AbortableCommitError(f"{call} stayed blocked; the transaction was fenced", call)

    def renew_producer(self) -> None:
        """A fresh transactional producer (same transactional.id) after an outage or a stuck close."""
        self.renewal_requested = False
        if isinstance(self.producer, TransactionalProducer):
            self.producer = self.producer.renewed()

    def request_renewal(self) -> None:
        """Ask for a fresh producer before the next checkpoint (the main loop renews it off the loop thread).

        Partitions lost to an expired session mean the group coordinator was unreachable for a whole
        session: its node most likely failed, and the producer would keep it cached (see stuck_call).
        Renewing at once saves the first checkpoint after the loss from blocking until it is fenced
        (measured on 3 nodes: every worker's next send_offsets_to_transaction blocked past 4 s).
        """
        if isinstance(self.producer, TransactionalProducer):
            self.renewal_requested = True

    # -- partitions leaving -------------------------------------------------------------------------------
    def discard(self, numbers: set[tuple[str, int]], state_partitions: set[int]) -> None:
        """Drop pending effects of partitions this worker no longer owns (their next owner redoes them)."""
        self._retry = [d for d in self._retry if cast(EngineKey, d.key)[0] not in state_partitions]
        self._dead_letters = [e for e in self._dead_letters if (e.meta.topic, e.meta.partition) not in numbers]
        self._rekeyed = [e for e in self._rekeyed if (e.meta.topic, e.meta.partition) not in numbers]

    def shutdown(self) -> None:
        self._committer.shutdown()
