"""One checkpoint: the effects of finished work, made durable together in one Kafka transaction.

Its life, as data (:data:`TRANSITIONS`), in the order the steps run:

    OPEN        effects collected from the engine and the intake; nothing sent yet
    PRODUCING   transaction begun; outputs, dead letters, re-keyed records and changelog records produced
    COMMITTING  send input offsets and flush, then commit (on the committer thread: the loop goes on)
    COMMITTED   the broker committed; post-commit not done yet
    SETTLED     post-commit done: offsets marked, stores written, keys released
    ABORTED     the transaction was aborted; its effects go into the next checkpoint
    FAILED      neither committed nor safely aborted: the worker exits, a restart resumes from the last commit

Every move is checked against the table and an illegal one raises (not an ``assert``, which
``python -O`` removes). Who drives the steps, retries aborted batches and decides what a failure
means is :class:`worker.checkpoint.checkpointer.Checkpointer`.
"""

from __future__ import annotations

import enum
import json
import time
from dataclasses import dataclass
from typing import Any, cast

from agentplan import KeyDelta
from worker.checkpoint.producer import (
    AbortableCommitError,
    CheckpointProducer,
    FatalCommitError,
)
from worker.exceptions import WorkerError
from worker.records import (
    EngineKey,
    RecordMeta,
    SourceHeaders,
    dlq_headers,
    encode_output,
    failure_reason,
    source_headers,
)
from worker.state.transaction import StateTransaction

__all__ = ["Checkpoint", "DeadLetter", "IllegalTransition", "Phase", "Rekeyed", "TRANSITIONS", "Topics"]

TopicPart = tuple[str, int]


class Phase(enum.Enum):
    OPEN = "open"
    PRODUCING = "producing"
    COMMITTING = "committing"
    COMMITTED = "committed"
    SETTLED = "settled"
    ABORTED = "aborted"
    FAILED = "failed"


TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.OPEN: frozenset({Phase.PRODUCING}),
    Phase.PRODUCING: frozenset({Phase.COMMITTING, Phase.ABORTED, Phase.FAILED}),
    Phase.COMMITTING: frozenset({Phase.COMMITTED, Phase.ABORTED, Phase.FAILED}),
    Phase.COMMITTED: frozenset({Phase.SETTLED}),
    Phase.SETTLED: frozenset(),
    Phase.ABORTED: frozenset(),
    Phase.FAILED: frozenset(),
}


class ApprovalsOff(WorkerError):
    """The agent parked a run on a worker started without --approvals: a misconfiguration, so the worker stops."""


class IllegalTransition(WorkerError):
    """A checkpoint step ran in a phase that does not allow it: a bug, never a broker condition."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An input that cannot be processed, with the reason code that goes into its DLQ headers."""

    meta: RecordMeta
    reason: str
    error: BaseException
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Rekeyed:
    """An input that goes back to Kafka under the key taken from its ``--key-field``."""

    meta: RecordMeta
    key: bytes
    value: bytes | None
    headers: Any


@dataclass(frozen=True, slots=True)
class Topics:
    app_id: str
    output: str
    dead_letter: str
    changelog: str
    repartition: str
    events: str | None = None  # the event log's topic, when the agent configuration turns it on
    approvals: str = ""  # empty: approvals are off (--approvals)


class Checkpoint:
    """The effects one transaction commits, and the phase it is in."""

    def __init__(self, name: str, deltas: list[KeyDelta], dead_letters: list[DeadLetter], rekeyed: list[Rekeyed],
                 offsets: dict[TopicPart, int], topics: Topics, records: int = 0) -> None:
        """``records``: the input records it commits (the in-flight window counts them until it settles)."""
        self.name = name
        self.deltas = deltas
        self.dead_letters = dead_letters
        self.rekeyed = rekeyed
        self.offsets = offsets  # input partition -> next offset to consume, committed with the transaction
        self.topics = topics
        self.state = StateTransaction(topics.changelog)
        for delta in deltas:
            partition, key = cast(EngineKey, delta.key)
            self.state.update(partition, key, delta.state)
        self.phase = Phase.OPEN
        self.outputs = 0
        self.records = records
        self.started = time.monotonic()
        self.duration_s = 0.0

    def move(self, to: Phase) -> None:
        if to not in TRANSITIONS[self.phase]:
            raise IllegalTransition(f"checkpoint {self.name}: {self.phase.value} -> {to.value} is not a legal move")
        self.phase = to

    def produce(self, producer: CheckpointProducer) -> None:
        """OPEN -> PRODUCING -> COMMITTING: begin the transaction and produce every effect into it."""
        self.move(Phase.PRODUCING)
        t = self.topics
        produce = producer.produce
        headers_of = SourceHeaders(t.app_id, self.name)
        output_topic = t.output
        producer.begin()
        for delta in self.deltas:
            partition, key = cast(EngineKey, delta.key)
            if delta.log and t.events is not None:  # the records of exactly the state this transaction commits
                for entry in delta.log:
                    produce(t.events, json.dumps(entry, ensure_ascii=False, default=str).encode(), key=key,
                            partition=partition)
            for meta, output in delta.outputs:
                produce(output_topic, encode_output(output), key=key, headers=headers_of(meta))
            self.outputs += len(delta.outputs)
            for meta, value, error in delta.failures:
                produce(t.dead_letter, encode_output(value), key=key,
                        headers=dlq_headers(meta, t.app_id, self.name, failure_reason(error), error))
            if delta.requests:
                if not t.approvals:
                    raise ApprovalsOff("a run sent an ApprovalRequestEvent but approvals are off: start the "
                                       "workers with --approvals (AGENTFLEET_APPROVALS=true)")
                partition = cast(EngineKey, delta.key)[0]  # the key's state partition: its decisions go there
                for meta, request in delta.requests:
                    produce(t.approvals, encode_output({**request, "partition": partition}), key=key,
                            partition=partition,
                            headers=source_headers(meta, t.app_id, self.name) if meta is not None else None)
        self.state.prepare(produce)
        for letter in self.dead_letters:
            produce(t.dead_letter, letter.value, key=letter.key,
                    headers=dlq_headers(letter.meta, t.app_id, self.name, letter.reason, letter.error))
        for record in self.rekeyed:
            produce(t.repartition, record.value, key=record.key, headers=record.headers)
        self.move(Phase.COMMITTING)

    def close(self, producer: CheckpointProducer) -> AbortableCommitError | FatalCommitError | None:
        """COMMITTING: send the input offsets and flush, then commit (any thread). The outcome is settled on
        the loop thread (:meth:`Checkpointer.settle`), which makes the move."""
        if self.phase is not Phase.COMMITTING:
            raise IllegalTransition(f"checkpoint {self.name}: close in phase {self.phase.value}")
        try:
            if producer.transactional:
                # Offsets in the transaction commit or abort with the outputs whatever the order; sent
                # first, their two round trips overlap the outputs' delivery (~1 ms of a ~6.5 ms commit).
                producer.send_offsets(self.offsets)
                producer.flush()  # serves the changelog delivery reports the state transaction waits for
            else:
                producer.flush()  # at-least-once: outputs delivered before their inputs' offsets commit
                producer.send_offsets(self.offsets)
            producer.commit()
        except (AbortableCommitError, FatalCommitError) as exc:
            return exc
        self.duration_s = time.monotonic() - self.started
        return None

    @property
    def failed_runs(self) -> int:
        return sum(len(d.failures) for d in self.deltas)
