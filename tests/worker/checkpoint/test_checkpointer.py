"""The checkpoint protocol driven through every transition and a failure at every step, with a fake producer.

The broker-facing behaviour is tested on Apache Kafka by the integration tests; here each step of the
state table is made to fail on purpose, which a real broker cannot be told to do.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from agentplan import KeyDelta
from worker.checkpoint.checkpoint import TRANSITIONS, Checkpoint, DeadLetter, IllegalTransition, Phase, Topics
from worker.checkpoint.checkpointer import Checkpointer
from worker.checkpoint.producer import (
    AbortableCommitError,
    AtLeastOnceProducer,
    FatalCommitError,
    TransactionalProducer,
)
from worker.exceptions import BrokerUnreachableError
from worker.offsets import OffsetTracker
from worker.records import RecordMeta
from worker.state.transaction import StateTransaction

TOPICS = Topics("app", "out", "dlq", "app-changelog", "app-repartition")
STEPS = ("begin", "produce", "send_offsets", "commit")


class _Msg:
    def __init__(self, partition: int, offset: int) -> None:
        self._partition, self._offset = partition, offset

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


class FakeProducer(TransactionalProducer):
    """Records each step; ``fail[step]`` raises that error once at that step."""

    def __init__(self) -> None:
        super().__init__(lambda: object(), consumer=None, timeout_s=1.0)  # type: ignore[arg-type]
        self.calls: list[str] = []
        self.fail: dict[str, Exception] = {}
        self.produced: list[tuple[str, Any, Any, Any]] = []
        self._reports: list[tuple[Callable[..., None], _Msg]] = []
        self._next_offset: dict[int, int] = {}
        self.renewals = 0

    def _step(self, name: str) -> None:
        self.calls.append(name)
        error = self.fail.pop(name, None)
        if error is not None:
            raise error

    def init(self) -> None:
        self._step("init")

    def begin(self) -> None:
        self._step("begin")
        self.in_transaction = True

    def produce(self, topic: str, value: bytes | None, key: bytes | None = None, partition: int | None = None,
                headers: Any = None, on_delivery: Callable[..., None] | None = None) -> None:
        self._step("produce")
        self.produced.append((topic, key, value, partition))
        if partition is not None:
            offset = self._next_offset.get(partition, 0)
            self._next_offset[partition] = offset + 1
            if on_delivery is not None:
                self._reports.append((on_delivery, _Msg(partition, offset)))

    def flush(self) -> None:
        self._step("flush")
        for report, msg in self._reports:
            report(None, msg)
        self._reports = []

    def send_offsets(self, offsets: dict[tuple[str, int], int]) -> None:
        self._step("send_offsets")

    def commit(self) -> None:
        self._step("commit")
        self.in_transaction = False

    def abort(self) -> None:
        if self.in_transaction:
            self._step("abort")
            self.in_transaction = False

    def renewed(self) -> FakeProducer:
        fresh = FakeProducer()
        fresh.renewals = self.renewals + 1
        fresh.fail, fresh.calls = self.fail, self.calls  # one script and one record across renewals
        return fresh


class FakeEngine:
    def __init__(self) -> None:
        self.ready: list[KeyDelta] = []
        self.released: list[KeyDelta] = []

    def collect(self) -> list[KeyDelta]:
        ready, self.ready = self.ready, []
        return ready

    def release(self, deltas: list[KeyDelta]) -> None:
        self.released.extend(deltas)


class FakeStore:
    def __init__(self) -> None:
        self.applied: list[tuple[dict[bytes, bytes | None], int]] = []

    def apply(self, states: dict[bytes, bytes | None], offset: int) -> None:
        self.applied.append((dict(states), offset))


def meta(offset: int, partition: int = 0) -> RecordMeta:
    return RecordMeta("in", partition, offset, 0, b"k")


def delta(key: bytes, offset: int, partition: int = 0, output: str = "out") -> KeyDelta:
    return KeyDelta(key=(partition, key), state=b"state-" + key, version=1, outputs=[(meta(offset, partition), output)],
                    finished=[meta(offset, partition)])


class Rig:
    def __init__(self, broker_down: bool = False) -> None:
        self.producer = FakeProducer()
        self.engine = FakeEngine()
        self.tracker = OffsetTracker()
        self.store = FakeStore()
        self.committed: list[Checkpoint] = []
        self.aborted: list[Checkpoint] = []
        self.checkpointer = Checkpointer(
            self.producer, self.engine, self.tracker, TOPICS, stores=lambda: {0: self.store},  # type: ignore[arg-type, dict-item]
            name_prefix="t", transaction_timeout_s=5.0, broker_down=lambda: broker_down,
            on_committed=self.committed.append, on_aborted=lambda cp, e: self.aborted.append(cp))

    def finish(self, *deltas: KeyDelta) -> None:
        for d in deltas:
            for m in d.finished:
                self.tracker.add((m.topic, m.partition), m.offset)
        self.engine.ready.extend(deltas)


def test_the_state_table_allows_only_the_documented_moves() -> None:
    assert TRANSITIONS[Phase.OPEN] == {Phase.PRODUCING}
    assert TRANSITIONS[Phase.COMMITTING] == {Phase.COMMITTED, Phase.ABORTED, Phase.FAILED}
    assert all(not TRANSITIONS[end] for end in (Phase.SETTLED, Phase.ABORTED, Phase.FAILED))
    checkpoint = Checkpoint("c", [], [], [], {}, TOPICS)
    with pytest.raises(IllegalTransition, match="open -> committed"):
        checkpoint.move(Phase.COMMITTED)
    with pytest.raises(IllegalTransition, match="close in phase open"):
        checkpoint.close(FakeProducer())


def test_a_commit_goes_through_every_phase_then_writes_the_store_at_the_delivered_offset() -> None:
    rig = Rig()
    rig.finish(delta(b"a", 0), delta(b"b", 1))
    rig.checkpointer.commit()
    # The offsets go first: in the transaction they commit or abort with the outputs, and their round trips
    # overlap the outputs' delivery. The flush still comes before the commit (the store waits for its reports).
    assert rig.producer.calls == ["begin", "produce", "produce", "produce", "produce", "send_offsets", "flush",
                                  "commit"]
    [checkpoint] = rig.committed
    assert checkpoint.phase is Phase.SETTLED and checkpoint.outputs == 2
    # Both keys' states in one batch, with the offset of the partition's last changelog record.
    assert rig.store.applied == [({b"a": b"state-a", b"b": b"state-b"}, 1)]
    assert [d.key for d in rig.engine.released] == [(0, b"a"), (0, b"b")]
    assert rig.tracker.unfinished == 0 and rig.tracker.changed() == {}
    assert rig.checkpointer.committed == 1


def test_nothing_finished_means_no_transaction() -> None:
    rig = Rig()
    rig.checkpointer.commit()
    assert rig.producer.calls == []


@pytest.mark.parametrize("step", STEPS)
def test_an_abortable_failure_at_any_step_aborts_and_retries_the_same_batch(step: str) -> None:
    rig = Rig()
    rig.finish(delta(b"a", 0))
    rig.producer.fail[step] = AbortableCommitError(f"{step} failed", step)
    rig.checkpointer.commit()
    assert [cp.phase for cp in rig.aborted] == [Phase.ABORTED]
    assert ("abort" in rig.producer.calls) == (step != "begin")  # a transaction that never began has nothing to abort
    assert rig.store.applied == [] and rig.engine.released == []  # nothing settled from the aborted batch
    assert rig.tracker.changed() == {("in", 0): 1}  # its offset is not marked committed until the retry commits
    rig.producer.calls.clear()
    rig.checkpointer.commit()  # the retry: the same delta, nothing new collected
    assert [d.key for d in rig.committed[0].deltas] == [(0, b"a")]
    assert rig.store.applied == [({b"a": b"state-a"}, 1 if step in ("send_offsets", "commit") else 0)]
    assert rig.tracker.changed() == {}


@pytest.mark.parametrize("step", [*STEPS, "flush"])
def test_a_fatal_failure_at_any_step_fails_the_checkpoint_and_raises(step: str) -> None:
    rig = Rig()
    rig.finish(delta(b"a", 0))
    rig.producer.fail[step] = FatalCommitError(f"{step} fenced")
    with pytest.raises(FatalCommitError, match=f"{step} fenced"):
        rig.checkpointer.commit()
    assert rig.store.applied == [] and rig.engine.released == [] and rig.committed == []


def test_a_fatal_failure_while_the_broker_is_down_names_the_outage() -> None:
    rig = Rig(broker_down=True)
    rig.finish(delta(b"a", 0))
    rig.producer.fail["commit"] = FatalCommitError("timed out")
    with pytest.raises(BrokerUnreachableError, match="became unreachable during transaction"):
        rig.checkpointer.commit()


def test_an_abort_that_fails_before_commit_transaction_fences_with_a_fresh_producer_and_retries() -> None:
    rig = Rig()
    rig.finish(delta(b"a", 0))
    rig.producer.fail["send_offsets"] = AbortableCommitError("coordinator moved", "send_offsets_to_transaction")
    rig.producer.fail["abort"] = FatalCommitError("INVALID_TXN_STATE")
    rig.checkpointer.commit()
    assert rig.checkpointer.producer.renewals == 1 and [cp.phase for cp in rig.aborted] == [Phase.ABORTED]
    rig.checkpointer.commit()
    assert len(rig.committed) == 1


def test_an_abort_that_fails_after_commit_transaction_failed_exits_because_it_may_have_committed() -> None:
    rig = Rig()
    rig.finish(delta(b"a", 0))
    rig.producer.fail["commit"] = AbortableCommitError("commit (retriable)", "commit_transaction")
    rig.producer.fail["abort"] = FatalCommitError("INVALID_TXN_STATE")
    with pytest.raises(FatalCommitError, match="then the abort failed"):
        rig.checkpointer.commit()
    assert rig.checkpointer.producer is rig.producer and rig.store.applied == []


def test_dead_letters_and_their_offsets_go_in_the_same_transaction() -> None:
    rig = Rig()
    rig.tracker.add(("in", 0), 7)
    rig.checkpointer.dead_letter(DeadLetter(meta(7), "not-json", ValueError("bad"), b"k", b"{"))
    rig.checkpointer.commit()
    [checkpoint] = rig.committed
    assert checkpoint.offsets == {("in", 0): 8}
    assert [(topic, value) for topic, _k, value, _p in rig.producer.produced] == [("dlq", b"{")]


def test_pending_effects_of_a_lost_partition_are_discarded() -> None:
    rig = Rig()
    rig.finish(delta(b"a", 0, partition=1))
    rig.producer.fail["commit"] = AbortableCommitError("abortable", "commit_transaction")
    rig.checkpointer.commit()  # aborted: the delta waits for a retry
    rig.checkpointer.discard({("in", 1)}, {1})
    rig.tracker.drop(("in", 1))
    rig.producer.calls.clear()
    rig.checkpointer.commit()
    assert rig.producer.calls == [] and rig.committed == []


def test_a_send_offsets_call_blocked_past_the_transaction_timeout_is_fenced_and_retried() -> None:
    rig = Rig()
    rig.finish(delta(b"a", 0))
    rig.producer.blocked_in = ("send_offsets_to_transaction", time.monotonic() - 1.5)
    assert rig.checkpointer.stuck_call() is None
    rig.producer.blocked_in = ("send_offsets_to_transaction", time.monotonic() - 2.5)  # past the first limit
    assert rig.checkpointer.stuck_call() == "send_offsets_to_transaction"
    outcome = rig.checkpointer._abandon("send_offsets_to_transaction")
    assert isinstance(outcome, AbortableCommitError)
    # A new producer object: the committer thread still blocked in the old one must not reach the new one.
    assert rig.checkpointer.producer is not rig.producer and rig.checkpointer.producer.renewals == 1
    # The next limit is doubled (4 s here; never past transaction.timeout.ms): a slow broker still commits.
    rig.checkpointer.producer.blocked_in = ("send_offsets_to_transaction", time.monotonic() - 3.5)
    assert rig.checkpointer.stuck_call() is None
    rig.checkpointer.producer.blocked_in = ("send_offsets_to_transaction", time.monotonic() - 4.5)
    assert rig.checkpointer.stuck_call() == "send_offsets_to_transaction"


class BlockingLibrdkafka:
    """librdkafka's transactional calls, as calls recorded; send_offsets_to_transaction blocks until released."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.blocked = threading.Event()
        self.release = threading.Event()

    def init_transactions(self, timeout: float) -> None:
        self.calls.append("init_transactions")

    def begin_transaction(self) -> None:
        self.calls.append("begin_transaction")

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any, timeout: float) -> None:
        self.calls.append("send_offsets_to_transaction")
        self.blocked.set()
        assert self.release.wait(10)

    def produce(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append("produce")

    def flush(self, timeout: float) -> int:
        return 0

    def commit_transaction(self, timeout: float) -> None:
        self.calls.append("commit_transaction")

    def abort_transaction(self, timeout: float) -> None:
        self.calls.append("abort_transaction")


class _Consumer:
    def consumer_group_metadata(self) -> object:
        return object()


def test_a_producer_cut_loose_never_commits_when_its_blocked_call_returns_after_all() -> None:
    """The fresh producer's fence and the old one's EndTxn race: the old one must never send EndTxn."""
    made: list[BlockingLibrdkafka] = []

    def make() -> Any:
        made.append(BlockingLibrdkafka())
        return made[-1]

    producer = TransactionalProducer(make, _Consumer(), timeout_s=1.0)  # type: ignore[arg-type]
    rig = Rig()
    rig.checkpointer.producer = producer
    rig.checkpointer._stuck_limit_s = 0.05
    rig.finish(delta(b"a", 0))
    rig.checkpointer.start()
    assert rig.checkpointer._in_flight is not None
    closing = rig.checkpointer._in_flight[1]
    rig.checkpointer.settle_in_flight()  # waits until the blocked call is past the limit, then fences
    assert rig.aborted and not rig.committed and rig.checkpointer.producer is not producer
    assert made[1].calls == ["init_transactions"]  # the fresh producer, which fenced the old one

    made[0].release.set()  # librdkafka returns after all
    outcome = closing.result(timeout=10)
    assert isinstance(outcome, AbortableCommitError) and "cut loose" in str(outcome)
    assert "commit_transaction" not in made[0].calls, made[0].calls


def test_poll_leaves_a_blocked_close_in_flight_until_it_is_stuck_then_cuts_it_loose() -> None:
    librdkafka = BlockingLibrdkafka()
    producer = TransactionalProducer(lambda: librdkafka, _Consumer(), timeout_s=1.0)  # type: ignore[arg-type]
    rig = Rig()
    rig.checkpointer.producer = producer
    rig.finish(delta(b"a", 0))
    rig.checkpointer.start()
    assert librdkafka.blocked.wait(10)  # the committer thread is in send_offsets_to_transaction
    assert rig.checkpointer.poll() and not rig.aborted  # blocked, not yet past the limit: still in flight
    rig.checkpointer._stuck_limit_s = 0.0
    assert not rig.checkpointer.poll()  # stuck: cut loose and settled as aborted on this call
    assert rig.aborted and rig.checkpointer.producer is not producer
    librdkafka.release.set()


def test_a_blocked_call_that_returned_meanwhile_is_not_cut_loose() -> None:
    producer = TransactionalProducer(lambda: BlockingLibrdkafka(), _Consumer(), timeout_s=1.0)  # type: ignore[arg-type]
    assert not producer.cut_loose("send_offsets_to_transaction")  # between calls
    producer.blocked_in = ("commit_transaction", time.monotonic())  # the close went on to commit
    assert not producer.cut_loose("send_offsets_to_transaction")
    producer.blocked_in = ("send_offsets_to_transaction", time.monotonic())
    assert producer.cut_loose("send_offsets_to_transaction")


def test_a_commit_transaction_call_blocked_for_good_is_fatal_because_it_may_have_committed() -> None:
    rig = Rig()
    rig.producer.blocked_in = ("commit_transaction", time.monotonic() - 5.0)  # within its timeout + margin
    assert rig.checkpointer.stuck_call() is None
    rig.producer.blocked_in = ("commit_transaction", time.monotonic() - 12.0)
    assert rig.checkpointer.stuck_call() == "commit_transaction"
    assert isinstance(rig.checkpointer._abandon("commit_transaction"), FatalCommitError)
    assert rig.checkpointer.producer is rig.producer


def test_state_is_never_written_before_its_changelog_records_were_delivered() -> None:
    state = StateTransaction("changelog")
    state.update(0, b"a", b"1")
    with pytest.raises(RuntimeError, match="before its changelog records were produced"):
        state.flush({0: FakeStore()})  # type: ignore[dict-item]
    state.prepare(lambda *a, **k: None)  # produced, but no delivery report came back
    with pytest.raises(RuntimeError, match="without a delivery report"):
        state.flush({0: FakeStore()})  # type: ignore[dict-item]


def test_at_least_once_commits_the_offsets_only_after_the_outputs_are_delivered() -> None:
    """Without a transaction an offset committed before its outputs were delivered could lose them."""
    calls: list[str] = []

    class AtLeastOnce(AtLeastOnceProducer):
        def flush(self) -> None:
            calls.append("flush")

        def send_offsets(self, offsets: dict[tuple[str, int], int]) -> None:
            calls.append("send_offsets")

    checkpoint = Checkpoint("c", [], [], [], {("in", 0): 1}, TOPICS)
    checkpoint.move(Phase.PRODUCING)
    checkpoint.move(Phase.COMMITTING)
    assert checkpoint.close(AtLeastOnce(lambda: object(), consumer=None)) is None  # type: ignore[arg-type]
    assert calls == ["flush", "send_offsets"]
