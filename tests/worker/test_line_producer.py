"""`agentfleet produce` never half-sends: bad input sends nothing; a failure mid-way names what landed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from tests.kafka_support import KafkaCluster
from tests.second_reader import read_topic_to_end
from worker.line_producer import transactional_id

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
LINES = 20_001


def produce(kafka: KafkaCluster, topic: str, path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker.cli", "produce", topic, "--file", str(path),
                           "--bootstrap-servers", kafka.bootstrap_servers, *args],
                          cwd=REPO, capture_output=True, text=True, timeout=180)


def write_lines(path: Path, replace: dict[int, str] | None = None) -> Path:
    """LINES JSON lines with ids 1..LINES; ``replace`` swaps given (1-based) lines for other text."""
    replace = replace or {}
    lines = [replace.get(n, json.dumps({"id": str(n), "text": f"review {n}"})) for n in range(1, LINES + 1)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def ids_in(kafka: KafkaCluster, topic: str, expected: int = 0, timeout_s: float = 30.0) -> list[str]:
    """Ids of the committed records, read by a second client up to the last stable offset.

    commit_transaction returns once the coordinator has logged the commit; the markers that let
    read_committed readers past the records follow asynchronously (slower under load: CI read 10,000 of
    20,001 right after a commit). So, until ``expected`` records are readable or the deadline passes,
    read again; the caller asserts the exact contents either way.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        ids = [json.loads(r.value or b"{}")["id"] for r in read_topic_to_end(kafka.bootstrap_servers, topic)]
        if len(ids) >= expected or time.monotonic() > deadline:
            return ids


@pytest.mark.parametrize("bad_line", [1, 10_000, LINES])
def test_a_bad_line_anywhere_sends_nothing_and_names_the_line(kafka: KafkaCluster, tmp_path: Path,
                                                              bad_line: int) -> None:
    topic = kafka.new_topic("produce-bad", partitions=2)
    out = produce(kafka, topic, write_lines(tmp_path / "in.jsonl", {bad_line: "not json"}), "--key-field", "id")
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(f"error: input: line {bad_line} is not JSON")
    assert "nothing was sent" in out.stderr
    assert ids_in(kafka, topic) == []


def test_a_broker_rejection_mid_way_reports_what_landed_and_resume_sends_the_rest_once(
        kafka: KafkaCluster, tmp_path: Path) -> None:
    # The broker refuses batches over 100 kB on this topic (the client batches up to 50 kB): line 15,000
    # is 200 kB, so the second transaction (lines 10,001-20,000) fails after the first committed.
    topic = kafka.new_topic("produce-reject", partitions=2, config={"max.message.bytes": "100000"})
    huge = json.dumps({"id": "15000", "text": "x" * 200_000})
    first = produce(kafka, topic, write_lines(tmp_path / "in.jsonl", {15_000: huge}), "--key-field", "id",
                    "-X", "batch.size=50000")
    assert first.returncode == 2, first.stderr
    last = first.stderr.strip().splitlines()[-1]
    assert last.startswith("error: kafka: Broker: Message size too large; "), last
    assert "lines 1-10000 (10000 records) are committed" in last, last
    assert last.endswith("resume with --from-line 10001"), last
    assert sorted(ids_in(kafka, topic, expected=10_000), key=int) == [str(n) for n in range(1, 10_001)]

    fixed = write_lines(tmp_path / "fixed.jsonl")
    resumed = produce(kafka, topic, fixed, "--key-field", "id", "--from-line", "10001", "-X", "batch.size=50000")
    assert resumed.returncode == 0, resumed.stderr
    assert "produced 10001 records" in resumed.stderr and "(lines 10001-20001, committed)" in resumed.stderr
    ids = ids_in(kafka, topic, expected=LINES)
    assert len(ids) == LINES and sorted(ids, key=int) == [str(n) for n in range(1, LINES + 1)]


def test_without_key_field_warns_and_strict_refuses(kafka: KafkaCluster, tmp_path: Path) -> None:
    topic = kafka.new_topic("produce-keyless")
    path = tmp_path / "two.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n', encoding="utf-8")
    warned = produce(kafka, topic, path)
    assert warned.returncode == 0, warned.stderr
    assert warned.stderr.startswith("warning: key-field: records will have no key")
    assert "produced 2 records" in warned.stderr and "(lines 1-3, committed)" in warned.stderr
    refused = produce(kafka, topic, path, "--strict")
    assert refused.returncode == 2 and refused.stderr.startswith("error: key-field: records will have no key")
    assert len(read_topic_to_end(kafka.bootstrap_servers, topic)) == 2


def test_a_transaction_left_open_by_a_dead_run_is_fenced_by_the_next_run_of_the_same_file(
        kafka: KafkaCluster, tmp_path: Path) -> None:
    """A run killed mid-send leaves its transaction open, and read_committed readers see nothing past it
    until the broker times it out (60 s). The next run of the same file uses the same transactional.id,
    so its start aborts the leftover and its own records are readable at once."""
    topic = kafka.new_topic("produce-leftover")
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": "1"}\n{"id": "2"}\n', encoding="utf-8")
    dead = Producer({"bootstrap.servers": kafka.bootstrap_servers,
                     "transactional.id": transactional_id(topic, str(path))})
    dead.init_transactions(30)
    dead.begin_transaction()
    dead.produce(topic, b'{"id": "dead"}', b"dead")
    dead.flush(30)  # written, never committed nor aborted: what a SIGKILL leaves
    out = produce(kafka, topic, path, "--key-field", "id")
    assert out.returncode == 0, out.stderr
    assert sorted(ids_in(kafka, topic, expected=2)) == ["1", "2"]  # end = the last stable offset: past the fenced one
