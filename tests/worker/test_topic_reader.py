"""`agentfleet consume`: values shown as what they are, partition/offset/key selection, follow, formats."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kafka_support import KafkaCluster

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def consume(kafka: KafkaCluster, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "worker.cli", "consume", *args,
                           "--bootstrap-servers", kafka.bootstrap_servers], cwd=REPO, capture_output=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def dlq_like(kafka: KafkaCluster) -> str:
    """What a dead-letter topic holds: JSON, text, invalid UTF-8, empty and null values, on 2 partitions."""
    topic = kafka.new_topic("consume", partitions=2)
    kafka.produce(topic, [(b"a", b'{"n": 1}', [("reason", b"ok")]), (b"b", b"not json"), (b"c", b"\xff\xfe{"),
                          (b"d", b""), (b"e", None), (b"a", b'{"n": 2}')], partition=0)
    kafka.produce(topic, [(b"z", f'{{"n": {i}}}'.encode()) for i in range(5)], partition=1)
    return topic


def lines(out: subprocess.CompletedProcess[bytes]) -> list[dict[str, object]]:
    assert out.returncode == 0, out.stderr.decode()
    return [json.loads(line) for line in out.stdout.decode().splitlines()]


def test_values_are_shown_as_what_they_are_and_it_stops_at_the_end(kafka: KafkaCluster, dlq_like: str) -> None:
    records = lines(consume(kafka, dlq_like, "--offset", "earliest", "--partition", "0"))
    shown = [{k: v for k, v in r.items() if k.startswith("value")} for r in records]
    assert shown == [{"value": {"n": 1}}, {"value_text": "not json"},
                     {"value_base64": base64.b64encode(b"\xff\xfe{").decode()}, {"value_text": ""},
                     {"value": None}, {"value": {"n": 2}}]
    assert records[0]["headers"] == {"reason": "ok"} and records[0]["key"] == "a"
    assert [r["offset"] for r in records] == list(range(6)) and {r["partition"] for r in records} == {0}


def test_key_offset_and_max_select_records(kafka: KafkaCluster, dlq_like: str) -> None:
    assert [r["value"] for r in lines(consume(kafka, dlq_like, "--from-beginning", "--key", "a"))] == [
        {"n": 1}, {"n": 2}]
    tail = lines(consume(kafka, dlq_like, "--partition", "1", "--offset", "-2"))
    assert [r["value"] for r in tail] == [{"n": 3}, {"n": 4}]
    assert [r["offset"] for r in lines(consume(kafka, dlq_like, "-p", "1", "--offset", "3", "--max", "1"))] == [3]
    assert lines(consume(kafka, dlq_like)) == []  # latest, not following: nothing new, and it exits


def test_raw_base64_and_template_formats(kafka: KafkaCluster, dlq_like: str) -> None:
    raw = consume(kafka, dlq_like, "-p", "0", "--offset", "earliest", "--max", "3", "--format", "raw")
    assert raw.returncode == 0 and raw.stdout == b'{"n": 1}\nnot json\n\xff\xfe{\n'
    b64 = consume(kafka, dlq_like, "-p", "0", "--offset", "2", "--max", "1", "--format", "base64")
    assert base64.b64decode(b64.stdout.strip()) == b"\xff\xfe{"
    kcat = consume(kafka, dlq_like, "-p", "0", "--offset", "earliest", "--max", "1", "--format", "%k|%v|%h|%p|%o")
    assert kcat.stdout == b'a|{"n": 1}|reason=ok|0|0\n'


def test_follow_waits_for_new_records_until_max(kafka: KafkaCluster) -> None:
    topic = kafka.new_topic("consume-follow")
    kafka.produce(topic, [(b"k", b'{"i": 0}')])
    follower = subprocess.Popen([sys.executable, "-m", "worker.cli", "consume", topic, "--offset", "earliest",
                                 "--follow", "--max", "2", "--bootstrap-servers", kafka.bootstrap_servers],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert follower.stdout is not None
        first = follower.stdout.readline()  # it is reading; past the end it must wait, not exit
        assert json.loads(first)["value"] == {"i": 0}, first
        assert follower.poll() is None
        kafka.produce(topic, [(b"k", b'{"i": 1}')])
        out, err = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 0, err.decode()
    assert [json.loads(line)["value"] for line in out.splitlines()] == [{"i": 1}]


def test_bad_selection_is_one_line_naming_the_setting(kafka: KafkaCluster, dlq_like: str) -> None:
    for args, expected in ((["--offset", "soon"], "error: offset: expected earliest, latest, N or -N"),
                           (["--partition", "7"], f"error: partition: '{dlq_like}' has partitions 0-1, not [7]"),
                           (["--format", "yaml"], "error: format: expected json, raw, base64 or a template")):
        out = consume(kafka, dlq_like, *args)
        assert out.returncode == 2 and out.stderr.decode().startswith(expected), out.stderr
