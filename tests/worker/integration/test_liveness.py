"""/healthz follows the event loop: a loop stuck past loop_stall_timeout_s fails liveness."""

from __future__ import annotations

import json

import pytest

from tests.worker.integration.harness import read_all, wait_for

pytestmark = pytest.mark.integration

AGENT = "tests.worker.integration.agents:LoopBlockingAgent"
STALL_TIMEOUT_S = 2


def test_healthz_fails_while_the_event_loop_is_blocked_and_passes_again_after(kafka, worker_factory, app_id):
    input_topic = kafka.new_topic("stall-in")
    output_topic = kafka.new_topic("stall-out")
    worker = worker_factory(AGENT, input_topic, output_topic, app_id,
                            env={"AGENTFLEET_LOOP_STALL_TIMEOUT_S": str(STALL_TIMEOUT_S)})
    worker.wait_ready()
    assert worker.http("/healthz")[0] == 200, worker.log()

    kafka.produce(input_topic, [("k", json.dumps({"block_s": 4 * STALL_TIMEOUT_S}))])
    assert wait_for(lambda: worker.http("/healthz")[0] == 503, timeout_s=30), worker.log()
    assert worker.metric("agentfleet_event_loop_round_age_seconds") > STALL_TIMEOUT_S
    assert worker.running()  # liveness reports the stall; restarting is the orchestrator's call

    assert wait_for(lambda: worker.http("/healthz")[0] == 200, timeout_s=30), worker.log()
    outputs = read_all(kafka.bootstrap_servers, output_topic, 1, expected=1, timeout_s=30)
    assert [json.loads(m.value()) for m in outputs] == [{"block_s": 4 * STALL_TIMEOUT_S}]
    log = worker.log()
    assert f"AGENTFLEET_LOOP_STALL_TIMEOUT_S is {STALL_TIMEOUT_S:g})" in log and "completes rounds again" in log, log
    assert worker.terminate() == 0, worker.log()
