"""The hand-written asyncio peer keeps its at-least-once promise on the real broker, through a SIGKILL.

It runs on this project's interpreter (confluent-kafka and openai with aiohttp are our dependencies
too), so no peers venv is needed. The model is the LLM stub over HTTP.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Message, TopicPartition

from agentplan.testing.llm_stub import StubLLMServer
from bench.peers.peer_common import seed_records
from tests.kafka_support import KafkaCluster

PEER = Path(__file__).resolve().parents[2] / "bench" / "peers" / "asyncio_peer.py"
RECORDS = 300
PARTITIONS = 2


def _start_peer(kafka: KafkaCluster, stub: StubLLMServer, input_topic: str, output_topic: str, group: str,
                count: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # as the peers run: nothing of the repo
    return subprocess.Popen(
        [sys.executable, str(PEER), "--bootstrap", kafka.bootstrap_servers, "--input-topic", input_topic,
         "--output-topic", output_topic, "--count", str(count), "--llm-base-url", stub.base_url, "--model", "m",
         "--group", group, "--max-inflight", "8", "--commit-interval-s", "0.2", "--timeout-s", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)


def _read(bootstrap: str, topic: str, at_least: int | None, timeout_s: float) -> list[Message]:
    """The records of ``topic`` once ``at_least`` are there (default: as many as it holds now); bounded."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 10})
    partitions = [TopicPartition(topic, p, 0) for p in range(PARTITIONS)]
    if at_least is None:
        at_least = sum(consumer.get_watermark_offsets(tp, timeout=15)[1] for tp in partitions)
    consumer.assign(partitions)
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < at_least and time.monotonic() < deadline:
            out += [m for m in consumer.consume(num_messages=500, timeout=0.2) if m.error() is None]
    finally:
        consumer.close()
    return out


def _key(msg: Message) -> str:
    key = msg.key()
    assert key is not None
    return key.decode()


def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        offsets = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30)
    finally:
        consumer.close()
    return {tp.partition: max(tp.offset, 0) for tp in offsets}  # no commit yet: -1001


def test_sigkill_mid_run_loses_nothing_and_commits_nothing_unfinished(kafka: KafkaCluster) -> None:
    input_topic = kafka.new_topic("asyncio-peer-in", partitions=PARTITIONS)
    output_topic = kafka.new_topic("asyncio-peer-out", partitions=PARTITIONS)
    records = seed_records(RECORDS)
    delivered = kafka.produce(input_topic, [(r["id"].encode(), json.dumps(r).encode()) for r in records])
    id_at = {(int(m.partition() or 0), int(m.offset() or 0)): _key(m) for m in delivered}
    group = f"asyncio-peer-{uuid.uuid4().hex[:8]}"
    # 50 ms per call, 8 in flight: at most 160 records/s, so the kill lands well before the end.
    with StubLLMServer(latency_ms=50) as stub:
        first = _start_peer(kafka, stub, input_topic, output_topic, group, RECORDS)
        try:
            assert len(_read(kafka.bootstrap_servers, output_topic, RECORDS // 3, timeout_s=60)) >= RECORDS // 3, \
                first.communicate(timeout=5)[1][-2000:] if first.poll() is not None else "no outputs"
        finally:
            os.killpg(first.pid, signal.SIGKILL)
            first.communicate(timeout=30)
        assert first.returncode == -signal.SIGKILL  # killed mid-run, not finished

        committed = _committed(kafka.bootstrap_servers, group, input_topic)
        done_before_restart = {_key(m) for m in _read(kafka.bootstrap_servers, output_topic, None, 30)}
        assert 0 < sum(committed.values()) < RECORDS, committed
        # The promise: a committed offset never passes a record without an output.
        below = [record_id for (p, o), record_id in id_at.items() if o < committed[p]]
        assert below and set(below) <= done_before_restart

        # A restart in the same group takes exactly the records past the committed offsets.
        remaining = RECORDS - sum(committed.values())
        second = _start_peer(kafka, stub, input_topic, output_topic, group, remaining)
        try:
            stdout, stderr = second.communicate(timeout=150)
        finally:
            if second.poll() is None:
                os.killpg(second.pid, signal.SIGKILL)
                second.communicate()
    assert second.returncode == 0, stderr[-2000:]
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["peer"] == "asyncio" and result["records"] == remaining
    assert result["cpu_ms_per_record"] > 0

    outputs = _read(kafka.bootstrap_servers, output_topic, RECORDS, timeout_s=30)
    assert {_key(m) for m in outputs} == {r["id"] for r in records}  # none lost
    assert all(json.loads(m.value() or b"{}")["sentiment"] in {"positive", "negative", "neutral"} for m in outputs)
    assert _committed(kafka.bootstrap_servers, group, input_topic) == {
        p: sum(1 for (q, _) in id_at if q == p) for p in range(PARTITIONS)}  # all committed at the end
