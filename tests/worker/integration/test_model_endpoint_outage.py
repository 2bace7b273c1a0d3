"""A worker whose model endpoint is down: one WARNING naming the URL and its setting (not the key),
``agentfleet_llm_endpoint_up`` at 0, no dead letters, and SIGTERM still drains within the grace."""

from __future__ import annotations

import json
import time

import pytest

from tests.worker.integration.harness import read_all, wait_for

pytestmark = pytest.mark.integration

SECRET = "sk-outage-test-7f3a9c"
GRACE_S = 3.0


def endpoint_up(worker, url: str) -> float | None:  # noqa: ANN001 - the harness's WorkerProcess
    _status, body = worker.http("/metrics")
    for line in body.splitlines():
        if line.startswith("agentfleet_llm_endpoint_up{") and f'endpoint="{url}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def test_model_outage_is_reported_once_and_sigterm_drains_within_the_grace(kafka, worker_factory, app_id,
                                                                            stub_llm) -> None:
    input_topic = kafka.new_topic("model-down-in", partitions=2)
    output_topic = kafka.new_topic("model-down-out", partitions=2)
    worker = worker_factory("tests.worker.integration.agents:CountingAgent", input_topic, output_topic, app_id,
                            env={"OPENAI_API_KEY": SECRET, "AGENTFLEET_SHUTDOWN_GRACE_S": str(GRACE_S),
                                 "AGENTPLAN_RETRY_BACKOFF_S": "0.05", "AGENTPLAN_RETRY_BACKOFF_MAX_S": "0.5"})
    worker.wait_ready(min_partitions=2)
    with stub_llm.outage():
        kafka.produce(input_topic, [(f"k{i}", json.dumps({"key": f"k{i}", "seq": 0})) for i in range(6)])
        assert wait_for(lambda: endpoint_up(worker, stub_llm.base_url) == 0.0), worker.log()
        assert wait_for(lambda: worker.metric("agentfleet_transient_retries_total") >= 30), worker.log()
        # Not ready while its model fails, yet alive: a restart would not bring the model back.
        ready_status, ready_body = worker.http("/readyz")
        endpoints = json.loads(ready_body)["model_endpoints"]
        assert ready_status == 503 and [(e["url"], e["up"]) for e in endpoints] == [(stub_llm.base_url, False)], \
            ready_body
        assert worker.http("/healthz")[0] == 200
        log = worker.log()
        warnings = [line for line in log.splitlines() if "model endpoint" in line and "WARNING" in line]
        assert len(warnings) == 1, log  # not one per retry
        assert f"{stub_llm.base_url} (from OPENAI_BASE_URL) is failing" in warnings[0]
        assert SECRET not in log
        started = time.monotonic()
        assert worker.terminate(timeout_s=GRACE_S + 30) == 0, worker.log()
        elapsed = time.monotonic() - started
    assert elapsed < GRACE_S + 20, f"SIGTERM took {elapsed:.1f}s with a {GRACE_S}s grace:\n{worker.log()}"
    assert elapsed >= GRACE_S - 0.5  # the runs waiting on the model held the drain until the grace ran out
    assert read_all(kafka.bootstrap_servers, f"{input_topic}-dlq", 2, expected=1, timeout_s=2) == []
