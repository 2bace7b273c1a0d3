"""Budgets on Apache Kafka: recorded spend equals the committed calls across a SIGKILL; a spent budget
defers or dead-letters its key while the other keys (on the same partition) keep flowing."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.worker.integration.harness import TopicTail, assert_counts_continue, header, wait_for
from worker.operator_tools import inspect_key

pytestmark = pytest.mark.integration

AGENT = "tests.worker.integration.agents:CountingAgent"
PRICES = {"stub": {"prompt": 3.0, "completion": 15.0}}


def agent_config(tmp_path: Path, budgets: dict[str, Any]) -> list[str]:
    path = tmp_path / f"agent-{len(list(tmp_path.glob('agent-*.yaml')))}.yaml"
    path.write_text(json.dumps({"budgets": budgets}))
    return ["--agent-config", str(path)]


def call_tokens(output: dict[str, Any]) -> int:
    """CountingAgent's one call per record, as the stub counts it (``len // 4 + 1`` per side)."""
    prompt = f"count <{output['key']}|{output['seq']}>"
    return len(prompt) // 4 + 1 + len(output["answer"]) // 4 + 1


def committed_states(bootstrap: str, changelog: str, partitions: int) -> dict[str, dict[str, Any]]:
    """Each key's last committed state, read from the changelog read_committed."""
    tail = TopicTail(bootstrap, changelog, partitions).start()
    try:
        assert tail.wait_caught_up(30)
    finally:
        records = tail.stop()
    states = {}
    for message in records:
        key, value = message.key(), message.value()
        if key is not None and value is not None:
            states[key.decode()] = json.loads(value)
    return states


def test_recorded_spend_equals_the_committed_calls_across_a_sigkill(kafka, worker_factory, stub_llm, app_id,
                                                                    tmp_path):
    partitions, keys, rounds = 4, [f"k{i}" for i in range(8)], 25
    input_topic = kafka.new_topic("budget-in", partitions=partitions)
    output_topic = kafka.new_topic("budget-out", partitions=partitions)
    config = agent_config(tmp_path, {"prices": PRICES, "tokens_per_window": 10**9})
    stub_llm.set_latency(30)  # calls in flight and results journaled but not committed when the kill lands
    outputs = TopicTail(kafka.bootstrap_servers, output_topic, partitions).start()
    try:
        a = worker_factory(AGENT, input_topic, output_topic, app_id, instance_id="a", extra_args=config)
        a.wait_ready(min_partitions=partitions)
        kafka.produce(input_topic, [(k, json.dumps({"key": k, "seq": r})) for r in range(rounds) for k in keys])
        assert wait_for(lambda: len(outputs) >= 60, 60), a.log()
        a.kill()
        b = worker_factory(AGENT, input_topic, output_topic, app_id, instance_id="b", extra_args=config)
        assert wait_for(lambda: len(outputs) >= rounds * len(keys), 90), b.log()
        assert b.terminate() == 0, b.log()
        assert outputs.wait_caught_up(30)
    finally:
        messages = outputs.stop()
    assert_counts_continue(messages, keys, rounds)  # every record out once, in order, state carried over
    # The kill made the workers call the model more often than records were committed.
    calls = sum(1 for r in stub_llm.requests if r["status"] == 200)
    assert calls > rounds * len(keys)

    states = committed_states(kafka.bootstrap_servers, f"{app_id}-state-changelog", partitions)
    spent: dict[str, int] = {}
    for message in messages:
        output = json.loads(message.value())
        spent[output["key"]] = spent.get(output["key"], 0) + call_tokens(output)
    for key in keys:
        usage = states[key]["u"]
        assert (usage["n"], usage["t"]) == (rounds, spent[key]), key
    total_usd = sum(states[k]["u"]["c"] for k in keys)
    assert total_usd > 0


def test_spent_budgets_defer_or_dead_letter_their_keys_while_other_keys_flow(kafka, worker_factory, app_id,
                                                                             tmp_path):
    input_topic = kafka.new_topic("budget-in", partitions=1)  # one partition: the deferred key shares it
    output_topic = kafka.new_topic("budget-out", partitions=1)
    config = agent_config(tmp_path, {
        "prices": PRICES, "window_s": 3600,
        "key_prefixes": {"defer-": {"tokens_per_window": 1},
                         "drop-": {"tokens_per_window": 1, "on_exceeded": "dead-letter"}},
        "tenant_field": "tenant", "tenants": {"trial": {"lifetime_usd": 1e-9}}})
    state_dir = tmp_path / "state"
    worker = worker_factory(AGENT, input_topic, output_topic, app_id, state_dir=state_dir, extra_args=config)
    outputs = TopicTail(kafka.bootstrap_servers, output_topic, 1).start()
    dlq = TopicTail(kafka.bootstrap_servers, f"{input_topic}-dlq", 1)
    free = [f"free-{i}" for i in range(4)]
    keys = ["defer-a", "drop-a", "trial-a", *free]
    try:
        worker.wait_ready()
        dlq.start()
        for r in range(3):
            kafka.produce(input_topic, [(k, json.dumps({"key": k, "seq": r, "tenant": "trial" if k == "trial-a"
                                                        else "paid"})) for k in keys])
        expected_out = 3 * len(free) + 3  # the three limited keys run once each
        assert wait_for(lambda: len(outputs) >= expected_out and len(dlq) >= 4, 60), worker.log()
        assert wait_for(lambda: worker.metric('agentfleet_dlq_records_total{reason="budget-exceeded"}') == 4, 10)
        cost = worker.metric("agentfleet_llm_cost_usd_total")
        started = time.monotonic()
        assert worker.terminate() == 0, worker.log()
        stopped_in = time.monotonic() - started
        assert outputs.wait_caught_up(30) and dlq.wait_caught_up(30)
    finally:
        out, dead = outputs.stop(), dlq.stop()
    by_key: dict[str, list[int]] = {}
    for message in out:
        value = json.loads(message.value())
        by_key.setdefault(value["key"], []).append(value["seq"])
    assert by_key == {**{k: [0, 1, 2] for k in free}, "defer-a": [0], "drop-a": [0], "trial-a": [0]}
    assert sorted((m.key().decode(), json.loads(m.value())["seq"]) for m in dead) == [
        ("drop-a", 1), ("drop-a", 2), ("trial-a", 1), ("trial-a", 2)]
    assert {header(m, "agentfleet.dlq.reason") for m in dead} == {"budget-exceeded"}
    assert {header(m, "agentfleet.dlq.exception") for m in dead} == {"BudgetExceeded"}
    assert stopped_in < 10, "SIGTERM waited for the deferred key instead of leaving it to the next owner"

    shown = inspect_key(state_dir, app_id, "defer-a")
    assert shown is not None and shown["finished_through_offset"] is not None
    usage = shown["budget_usage"]
    assert usage["lifetime_calls"] == 1 and usage["lifetime_tokens"] > 1 and usage["lifetime_usd"] > 0
    assert sum(bucket["tokens"] for bucket in usage["window"]) == usage["lifetime_tokens"]
    # The metric counts the same calls the states record (one worker, nothing repeated).
    states = [inspect_key(state_dir, app_id, k) for k in keys]
    assert cost == pytest.approx(sum(s["budget_usage"]["lifetime_usd"] for s in states if s is not None))
