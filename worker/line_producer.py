"""``agentfleet produce``: JSON lines to a topic, all validated first, then committed in transactions.

Why transactions for a command-line producer: a plain producer that fails half-way (a bad line,
a broker error, Ctrl-C) leaves an unknown subset of the input in the topic, and re-running the fixed
file duplicates it. Here nothing is sent until every line is valid; then lines go out in chunks,
each committed in one transaction, so the topic holds exactly the chunks the summary reports (for
read_committed readers, as workers are), and ``--from-line`` resumes at the first line not committed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from worker.exceptions import ConfigurationError, WorkerError
from worker.kafka.admin import TopicAdmin
from worker.kafka.properties import producer_properties

__all__ = ["ProduceFailed", "ProduceSummary", "LineRecord", "parse_lines", "produce_lines"]

logger = logging.getLogger(__name__)

DEFAULT_CHUNK = 10_000
_PURGED = (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT)
_MAX_REPORTED = 5
_COMMIT_TIMEOUT_S = 60


@dataclass(frozen=True)
class LineRecord:
    line: int
    key: str | None
    value: bytes


@dataclass(frozen=True)
class ProduceSummary:
    records: int
    first_line: int | None
    last_line: int | None


class ProduceFailed(WorkerError):
    """Sending stopped part-way; ``committed`` lines are in the topic, the rest is not."""

    def __init__(self, reason: str, committed: ProduceSummary, resume_line: int) -> None:
        self.committed = committed
        self.resume_line = resume_line
        landed = (f"lines {committed.first_line}-{committed.last_line} ({committed.records} records) are committed"
                  if committed.records else "nothing was committed")
        super().__init__(f"kafka: {reason}; {landed}; resume with --from-line {resume_line}")


def parse_lines(lines: Iterable[str], key_field: str | None, from_line: int = 1) -> list[LineRecord]:
    """Every non-empty line from ``from_line`` on, parsed; raise naming the bad lines, before any send."""
    records: list[LineRecord] = []
    problems: list[str] = []
    bad = 0
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if number < from_line or not text:
            continue
        problem, key = _check(text, key_field)
        if problem is None:
            records.append(LineRecord(number, key, text.encode()))
            continue
        bad += 1
        if len(problems) < _MAX_REPORTED:
            problems.append(f"line {number} {problem}")
    if bad:
        setting = "key-field" if all("has no field" in p for p in problems) else "input"
        more = f" (and {bad - len(problems)} more)" if bad > len(problems) else ""
        raise ConfigurationError(setting, f"{'; '.join(problems)}{more}; nothing was sent")
    return records


def _check(text: str, key_field: str | None) -> tuple[str | None, str | None]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"is not JSON: {exc}", None
    if key_field is None:
        return None, None
    if not isinstance(value, dict) or key_field not in value:
        return f"has no field {key_field!r}", None
    return None, str(value[key_field])


def transactional_id(topic: str, source: str | None) -> str:
    """The same for every run that sends ``source`` (a file path) to ``topic``; random for stdin.

    A run whose abort did not reach the broker (a crash, a kill, an abort that failed) leaves its
    transaction open until the broker times it out, and read_committed readers (workers included) see
    nothing past it meanwhile. The resume, or any re-run of the same file, fences it at once instead:
    its init_transactions aborts the open transaction of the same transactional.id.
    """
    if source is None:
        return f"agentfleet-produce-{uuid.uuid4().hex}"
    digest = hashlib.sha256(f"{topic}\0{os.path.abspath(source)}".encode()).hexdigest()[:20]
    return f"agentfleet-produce-{digest}"


def produce_lines(bootstrap: str, topic: str, records: list[LineRecord], config: dict[str, Any],
                  chunk: int = DEFAULT_CHUNK, advance: Callable[[int], None] = lambda n: None,
                  source: str | None = None) -> ProduceSummary:
    """Send ``records`` (read from the file ``source``, or stdin) in order, one transaction per ``chunk``;
    return what was committed.

    On any failure, or KeyboardInterrupt, the open chunk is aborted and :class:`ProduceFailed`
    says which lines are committed; the command never returns with records in flight.
    """
    admin = TopicAdmin(bootstrap, config, timeout_s=10)
    admin.check_reachable()
    if not admin.topic_exists(topic):
        raise ConfigurationError("topic", f"topic {topic!r} does not exist (create it with agentfleet topics create)")
    if not records:
        return _summary([])
    client_log = _ClientLog()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, **producer_properties(config),
                         "transactional.id": transactional_id(topic, source), "logger": client_log})
    committed: list[LineRecord] = []
    try:
        producer.init_transactions(30)
        for start in range(0, len(records), chunk):
            part = records[start:start + chunk]
            try:
                _send_chunk(producer, topic, part, client_log)
            except _ChunkAborted as exc:
                raise ProduceFailed(exc.reason, _summary(committed), part[0].line) from None
            except KeyboardInterrupt:
                _abort_quietly(producer)
                raise ProduceFailed("interrupted", _summary(committed), part[0].line) from None
            committed.extend(part)
            advance(len(part))
    except KafkaException as exc:  # init_transactions: nothing sent yet
        raise ProduceFailed(_reason(exc), _summary(committed), records[len(committed)].line) from None
    return _summary(committed)


def _send_chunk(producer: Producer, topic: str, part: list[LineRecord], client_log: _ClientLog) -> None:
    causes: list[str] = []  # delivery errors that say why, in order

    def on_delivery(err: Any, _msg: Any) -> None:
        # Once a record fails, librdkafka purges the rest of the transaction's queue ("Purged in queue")
        # and may report those first; the cause is the first error that is not a purge.
        if err is not None and err.code() not in _PURGED:
            causes.append(err.str())

    producer.begin_transaction()
    try:
        for record in part:
            while True:
                try:
                    producer.produce(topic, key=record.key, value=record.value, on_delivery=on_delivery)
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    producer.poll(0.1)
        client_log.transaction_error = None
        _flush_until_failure(producer, causes, client_log)
        producer.commit_transaction(_COMMIT_TIMEOUT_S)
    except KafkaException as exc:
        # A rejected record puts the transaction in an error state, and later calls fail with "Erroneous
        # state" -- possibly before the rejected record's delivery report is served. The abort serves every
        # outstanding report first (_abort_quietly); the rejected record's cause is then preferred.
        _abort_quietly(producer)
        while producer.poll(0):
            pass
        raise _ChunkAborted((causes or [_reason(exc)])[0]) from None


class _ClientLog:
    """librdkafka's log for the producer (its ``logger`` setting), passed on to this module's logger.

    It also keeps the TXNERR line librdkafka logs when a failed record makes the transaction abortable:
    the failed record's own delivery report may be served only after the abort, so without this signal
    the flush below would wait out its whole deadline (60 s) for a chunk that can no longer commit.
    """

    def __init__(self) -> None:
        self.transaction_error: str | None = None

    def log(self, level: int, message: str, *args: Any) -> None:
        # confluent-kafka calls log(level, "%s [%s] %s", facility, client name, text).
        if len(args) == 3 and args[0] == "TXNERR":
            self.transaction_error = str(args[2])
        logger.log(level, message, *args)


def _flush_until_failure(producer: Producer, causes: list[str], client_log: _ClientLog) -> None:
    """Deliver the chunk, stopping at the first failed record or the transaction's failure.

    commit_transaction would flush too, but after a rejection the rest of the queue is held back until
    the transaction is aborted, so its flush would wait out its whole timeout (and leave the abort
    refused as "conflicting commit_transaction call").
    """
    deadline = time.monotonic() + _COMMIT_TIMEOUT_S
    while producer.flush(0.2) > 0:
        if causes or client_log.transaction_error is not None:
            raise KafkaException(causes[0] if causes else client_log.transaction_error)
        if time.monotonic() > deadline:
            raise KafkaException(f"records not delivered within {_COMMIT_TIMEOUT_S} s")


class _ChunkAborted(Exception):
    """The chunk's transaction failed and has been aborted; ``reason`` is the first real cause."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _reason(exc: KafkaException) -> str:
    """The broker's or client's words, not the KafkaError repr."""
    first = exc.args[0] if exc.args else exc
    return first.str() if hasattr(first, "str") else str(first)


def _abort_quietly(producer: Producer) -> None:
    # The abort waits until every outstanding record is reported, and confluent-kafka serves no reports
    # while it waits: drop the unsent ones (the transaction is aborted anyway) and serve their reports
    # first, or a large queue holds the abort until its timeout.
    producer.purge(in_queue=True, in_flight=True)
    producer.flush(_COMMIT_TIMEOUT_S)
    try:
        producer.abort_transaction(30)
    except KafkaException as exc:  # a fatal producer error: the broker aborts the transaction on its timeout
        logger.warning("abort failed (the broker will abort on the transaction timeout): %s", exc)


def _summary(committed: list[LineRecord]) -> ProduceSummary:
    if not committed:
        return ProduceSummary(0, None, None)
    return ProduceSummary(len(committed), committed[0].line, committed[-1].line)
