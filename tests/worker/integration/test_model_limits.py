"""Issue 14: two workers share a model endpoint that answers R requests/s and refuses the rest with
429 + Retry-After (the stub's token bucket). Their adaptive limiters keep the endpoint near R without a
429 storm; with a fleet-wide requests_per_minute below R each takes its partitions' share and the
endpoint never refuses. Nothing is lost or dead-lettered; the limiter's metrics are on /metrics."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from agentplan.testing.llm_stub import StubLLMServer
from tests.worker.integration.harness import TopicTail, WorkerProcess, header, wait_for

pytestmark = pytest.mark.integration

PARTITIONS = 4
RATE = 20.0  # requests/s the stub answers
KEYS = 40


@pytest.mark.parametrize(("fleet_rate", "records"), [
    (None, 240),  # adaptive concurrency alone: ~12 s at RATE
    (0.8 * RATE, 160),  # requests_per_minute = 60 x 16/s, half of it per worker (2 of 4 partitions): ~10 s
], ids=["adaptive", "fleet-rpm"])
def test_two_workers_settle_near_the_endpoints_rate_limit_and_lose_nothing(kafka, tmp_path, fleet_rate: float | None,
                                                                           records: int) -> None:
    input_topic = kafka.new_topic("limits-in", partitions=PARTITIONS)
    output_topic = kafka.new_topic("limits-out", partitions=PARTITIONS)
    app = f"app-{uuid.uuid4().hex[:8]}"
    with StubLLMServer(rate_limit=RATE, latency_ms=250, record_requests=False) as stub:
        workers = [WorkerProcess(kafka.bootstrap_servers, "tests.worker.integration.limits_agents:LimitedCountingAgent",
                                 input_topic, output_topic, app, tmp_path / f"state-{i}", f"w{i}", tmp_path,
                                 env={"OPENAI_BASE_URL": stub.base_url, "OPENAI_API_KEY": "test",
                                      "AGENTPLAN_RETRY_BACKOFF_S": "0.05",
                                      "LIMITS_TEST_RPM": str(fleet_rate * 60) if fleet_rate else ""}).start()
                   for i in range(2)]
        outputs = TopicTail(kafka.bootstrap_servers, output_topic, PARTITIONS).start()
        dlq = TopicTail(kafka.bootstrap_servers, f"{input_topic}-dlq", PARTITIONS)
        try:
            def assignment() -> list[int]:
                counts = []
                for w in workers:
                    assert w.running(), w.log()
                    status, body = w.http("/readyz")
                    counts.append(json.loads(body).get("assigned_partitions", 0) if status == 200 and body else 0)
                return counts

            # Both own partitions: a rebalance under load would redo uncommitted calls (correctly, but
            # this test counts the endpoint's answers).
            assert wait_for(lambda: sum(assignment()) == PARTITIONS and min(assignment()) > 0, 60), \
                [w.log() for w in workers]
            dlq.start()
            kafka.produce(input_topic, [(f"k{i % KEYS}", json.dumps({"key": f"k{i % KEYS}", "seq": i}))
                                        for i in range(records)])
            began = time.monotonic()

            def distinct() -> int:
                return len({(header(m, "agentfleet.source.partition"), header(m, "agentfleet.source.offset"))
                            for m in outputs.records})

            # (seconds, answers) when a quarter and when three quarters of the outputs are out: the rate
            # in between leaves out the start-up probing and the drain's tail (fewer keys left).
            marks: list[tuple[float, int]] = []
            while distinct() < records and time.monotonic() - began < 60:  # bounded
                if distinct() >= records * (len(marks) + 1) // 4 and len(marks) < 3:
                    marks.append((time.monotonic(), stub.stats()["by_status"].get("200", 0)))
                time.sleep(0.1)
            elapsed = time.monotonic() - began
            stats = stub.stats()["by_status"]
            scraped = [w.http("/metrics")[1] for w in workers]
            assert distinct() == records, f"{distinct()} of {records} outputs after {elapsed:.1f}s"
            assert len(outputs.records) == records  # no duplicates either
            assert dlq.records == []
            # Each record is one answered call: the endpoint's whole budget went to useful work.
            assert stats.get("200") == records
            # The middle half runs within 10% of the target.
            target = fleet_rate or RATE
            (t1, answered1), (t3, answered3) = marks[0], marks[2]
            middle_rate = (answered3 - answered1) / (t3 - t1)
            assert 0.9 * target <= middle_rate <= 1.1 * target, (middle_rate, stats)
            if fleet_rate:  # each worker kept to its share: the sum stays under the endpoint's limit
                assert stats.get("429", 0) == 0, stats
            else:  # backing off on 429 (the limit, and the endpoint-wide pause) keeps refusals to a fraction
                assert stats.get("429", 0) <= records, stats
            print(f"rate {middle_rate:.1f}/s (target {target}), answers {stats}, {elapsed:.1f}s")
            for body in scraped:
                assert f'agentfleet_llm_concurrency_limit{{endpoint="{stub.base_url}"}}' in body
                assert "agentfleet_llm_throttled_seconds_total{" in body
            for w in workers:
                assert w.terminate() == 0, w.log()
        finally:
            for w in workers:
                if w.running():
                    w.kill()
            outputs.stop()
            dlq.stop()
