"""A worker SIGKILLed inside a transaction: the coordinator aborts it after transaction.timeout.ms, or a
restarted worker with the same instance id fences it at once.

Only Apache Kafka shows this: the embedded Tansu broker never times a transaction out and hands
aborted records to read_committed readers (README, Limits). Each wait polls the broker's offsets:
while a transaction is open, the last stable offset (what read_committed readers may read up to) of
a partition it wrote to stays below the high watermark; the abort moves it up to the end.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest
from confluent_kafka import Message
from confluent_kafka.admin import AdminClient

from tests.kafka_support import KafkaCluster
from tests.worker.integration.harness import (
    WorkerProcess,
    assert_counts_continue,
    header,
    produce_round,
    read_all,
    wait_for,
)
from tests.worker.integration.topic_probe import (
    admin_client,
    committed_offsets,
    open_transaction_partitions,
    read_to_end,
)
from worker.config import WorkerSettings

pytestmark = pytest.mark.integration

AGENT = "tests.worker.integration.agents:CountingAgent"
PARTITIONS = 4
KEYS = [f"k{i}" for i in range(40)]
ROUNDS = 30
DEFAULT_TIMEOUT_S = WorkerSettings.model_fields["transaction_timeout_ms"].default / 1000
# A commit already sent when the worker was frozen completes within milliseconds on a local broker;
# a transaction still open this long after the freeze stays open for as long as the process is frozen.
STILL_OPEN_S = 1.0

WorkerFactory = Callable[..., WorkerProcess]


def _skip_on_tansu(kafka: KafkaCluster) -> None:
    if not kafka.hides_aborted:
        pytest.skip("the embedded Tansu broker never times out a transaction and delivers aborted records")


def _busy_victim(kafka: KafkaCluster, worker_factory: WorkerFactory, app_id: str,
                 env: dict[str, str] | None = None) -> tuple[str, str, WorkerProcess]:
    """Topics, and a worker in the middle of ROUNDS rounds of input (one record per key per round)."""
    input_topic = kafka.new_topic("txn-timeout-in", partitions=PARTITIONS)
    output_topic = kafka.new_topic("txn-timeout-out", partitions=PARTITIONS)
    victim = worker_factory(AGENT, input_topic, output_topic, app_id, instance_id="victim", env=env)
    victim.wait_ready(min_partitions=PARTITIONS)
    for round_no in range(ROUNDS):
        produce_round(kafka, input_topic, KEYS, round_no)
    assert wait_for(lambda: victim.metric("agentfleet_records_out_total") >= 3 * len(KEYS)), victim.log()
    return input_topic, output_topic, victim


def kill_inside_transaction(worker: WorkerProcess, admin: AdminClient, topic: str, timeout_s: float = 60) -> float:
    """SIGKILL ``worker`` while a transaction of it holds records in ``topic``; returns when it was frozen.

    A commit keeps its transaction open for milliseconds out of every commit interval, so this watches
    the broker for an open transaction and freezes the process (SIGSTOP) the moment it sees one. If the
    transaction is still open STILL_OPEN_S later, the process is killed; otherwise it was already
    committing: the process goes on (SIGCONT, well within its session) and the watch resumes.
    """
    assert worker.proc is not None
    pid = worker.proc.pid
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not open_transaction_partitions(admin, topic, PARTITIONS):
            continue  # each check is two broker round trips: the loop paces itself
        os.kill(pid, signal.SIGSTOP)
        frozen = time.monotonic()
        if not wait_for(lambda: not open_transaction_partitions(admin, topic, PARTITIONS), STILL_OPEN_S, 0.05):
            worker.kill()
            return frozen
        os.kill(pid, signal.SIGCONT)
    raise AssertionError(f"no open transaction caught within {timeout_s}s:\n{worker.log()}")


def seconds_until_no_open_transaction(admin: AdminClient, topic: str, since: float, timeout_s: float) -> float:
    assert wait_for(lambda: not open_transaction_partitions(admin, topic, PARTITIONS), timeout_s, 0.05), \
        f"{topic}: a transaction was still open {timeout_s}s later"
    return time.monotonic() - since


def _txn(msg: Message) -> str:
    return str(header(msg, "agentfleet.txn"))


def assert_the_open_transaction_was_aborted(bootstrap: str, topic: str) -> list[Message]:
    """Exactly one transaction's records reach a read_uncommitted reader and never a read_committed one:
    the killed worker's last transaction. Returns its records."""
    everything = read_to_end(bootstrap, topic, PARTITIONS, isolation="read_uncommitted")
    committed = {_txn(m) for m in read_to_end(bootstrap, topic, PARTITIONS)}
    aborted = [m for m in everything if _txn(m) not in committed]
    names = {_txn(m) for m in aborted}
    assert len(names) == 1, names
    prefix, _, number = names.pop().rpartition("#")
    assert int(number) == max(int(_txn(m).rpartition("#")[2]) for m in everything
                              if _txn(m).startswith(prefix + "#"))
    return aborted


def assert_each_input_committed_once(bootstrap: str, output_topic: str, finisher: WorkerProcess) -> None:
    """Let ``finisher`` process the rest and stop it; then every input has one committed output, in order."""
    expected = ROUNDS * len(KEYS)
    arrived = read_all(bootstrap, output_topic, PARTITIONS, expected=expected, timeout_s=120)
    assert len(arrived) == expected, finisher.log()
    assert finisher.terminate() == 0, finisher.log()
    assert_counts_continue(read_to_end(bootstrap, output_topic, PARTITIONS), KEYS, ROUNDS)


def test_killed_workers_transaction_is_aborted_after_the_transaction_timeout(
        kafka: KafkaCluster, worker_factory: WorkerFactory, app_id: str, record_property: Callable[..., None]):
    _skip_on_tansu(kafka)
    admin = admin_client(kafka.bootstrap_servers)
    input_topic, output_topic, victim = _busy_victim(kafka, worker_factory, app_id)
    frozen = kill_inside_transaction(victim, admin, output_topic)

    # Nothing else uses the victim's transactional.id: only the coordinator's timer ends the transaction.
    # It was begun before the freeze, so the abort comes at most the timeout after it, plus one scan of
    # the coordinator for timed-out transactions (every second on the test broker).
    kill_to_abort = seconds_until_no_open_transaction(admin, output_topic, frozen, DEFAULT_TIMEOUT_S + 15)
    record_property("kill_to_abort_s", round(kill_to_abort, 2))
    assert DEFAULT_TIMEOUT_S - 1 <= kill_to_abort <= DEFAULT_TIMEOUT_S + 5, kill_to_abort

    # Its records reached the log (a read_uncommitted reader gets them), never a read_committed reader.
    records = assert_the_open_transaction_was_aborted(kafka.bootstrap_servers, output_topic)
    # Nor were its input offsets committed: the group's offsets stay at or below each of its inputs.
    offsets = committed_offsets(admin, app_id, input_topic, PARTITIONS)
    for m in records:
        source = int(header(m, "agentfleet.source.partition") or -1)
        assert offsets[source] <= int(header(m, "agentfleet.source.offset") or -1), (offsets, source)

    # So another worker processes those inputs again, and each input has exactly one committed output.
    successor = worker_factory(AGENT, input_topic, output_topic, app_id, instance_id="successor")
    assert_each_input_committed_once(kafka.bootstrap_servers, output_topic, successor)


def test_restarted_worker_fences_the_open_transaction_long_before_its_timeout(
        kafka: KafkaCluster, worker_factory: WorkerFactory, app_id: str, record_property: Callable[..., None]):
    _skip_on_tansu(kafka)
    # A timeout the test never reaches: whatever ends the transaction, it is not the coordinator's timer.
    env = {"AGENTFLEET_TRANSACTION_TIMEOUT_MS": "120000"}
    admin = admin_client(kafka.bootstrap_servers)
    input_topic, output_topic, victim = _busy_victim(kafka, worker_factory, app_id, env)
    frozen = kill_inside_transaction(victim, admin, output_topic)
    restarted = worker_factory(AGENT, input_topic, output_topic, app_id, instance_id="victim", env=env)
    # The new producer's init_transactions aborts the predecessor's open transaction.
    kill_to_abort = seconds_until_no_open_transaction(admin, output_topic, frozen, 60)
    # The restarted worker counts outputs once their transaction committed.
    assert wait_for(lambda: restarted.metric("agentfleet_records_out_total") > 0, timeout_s=60, interval_s=0.05), \
        restarted.log()
    kill_to_output = time.monotonic() - frozen
    record_property("kill_to_abort_s", round(kill_to_abort, 2))
    record_property("kill_to_first_output_s", round(kill_to_output, 2))
    assert kill_to_abort < 30 and kill_to_output < 30, (kill_to_abort, kill_to_output)
    assert_the_open_transaction_was_aborted(kafka.bootstrap_servers, output_topic)
    assert_each_input_committed_once(kafka.bootstrap_servers, output_topic, restarted)
