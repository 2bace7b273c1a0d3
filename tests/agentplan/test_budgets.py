"""Per-key budgets: usage recorded with the journal (never twice on replay), cost, defer and dead-letter.

Model calls go to the LLM stub over HTTP through the real ``openai`` client; the stub's token counts
are a character estimate (``len // 4 + 1``), which the assertions recompute from what it was sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from agentplan import (
    Agent,
    AgentConfiguration,
    AgentPlan,
    AgentPlanError,
    ChatMessage,
    ChatRequestEvent,
    ChatResponseEvent,
    Engine,
    InputEvent,
    MessageRole,
    OpenAIChatModelSetup,
    OutputEvent,
    ResourceDescriptor,
    ResourceType,
    RunnerContext,
)
from agentplan.budgets import BudgetPolicy, BudgetSettings, OnExceeded
from agentplan.metrics import RecordingMetrics
from agentplan.testing.llm_stub import StubLLMServer
from tests.agentplan.conftest import EnvFactory
from tests.agentplan.support import CONNECTION, make_config, run_async, stub_connection

PRICES = {"stub-model": {"prompt": 2.0, "completion": 8.0}}


def ask(event: InputEvent, ctx: RunnerContext) -> None:
    ctx.send_event(ChatRequestEvent(model="model", messages=[ChatMessage(role=MessageRole.USER,
                                                                         content=str(event.input["text"]))]))


def answer(event: ChatResponseEvent, ctx: RunnerContext) -> None:
    ctx.send_event(OutputEvent(output=event.response.content))


def chat_agent() -> Agent:
    agent = Agent()
    agent.add_resource("model", ResourceDescriptor(clazz=OpenAIChatModelSetup, connection=CONNECTION,
                                                   model="stub-model"))
    agent.add_action("ask", [InputEvent], ask)
    agent.add_action("answer", [ChatResponseEvent], answer)
    return agent


def tokens_of(request: dict[str, Any]) -> tuple[int, int]:
    """The stub's usage for one logged request whose reply was ``echo: <last user message>``."""
    prompt = sum(len(m["content"]) for m in request["messages"]) // 4 + 1
    return prompt, len("echo: " + request["messages"][-1]["content"]) // 4 + 1


def usage_of(state: bytes) -> dict[str, Any]:
    return json.loads(state)["u"]


def run_local(env: Any, inputs: list[tuple[str, str]]) -> list[Any]:
    output = env.from_list([{"key": k, "value": {"text": t}} for k, t in inputs]).apply(chat_agent()).to_list()
    env.execute()
    return output


def test_usage_and_cost_are_recorded_per_key(stub_llm: StubLLMServer, make_env: EnvFactory) -> None:
    env = make_env(budgets={"prices": PRICES})
    run_local(env, [("a", "one"), ("b", "a longer question"), ("a", "three four five six seven")])
    for key, texts in (("a", ["one", "three four five six seven"]), ("b", ["a longer question"])):
        requests = [r for r in stub_llm.requests if r["messages"][-1]["content"] in texts]
        prompt = sum(tokens_of(r)[0] for r in requests)
        completion = sum(tokens_of(r)[1] for r in requests)
        usage = usage_of(env.state[key])
        assert (usage["n"], usage["t"]) == (len(texts), prompt + completion)
        assert usage["c"] == pytest.approx((2.0 * prompt + 8.0 * completion) / 1e6)
        assert sum(bucket[1] for bucket in usage["w"]) == usage["t"]
    metrics = env.metrics
    assert isinstance(metrics, RecordingMetrics)
    assert metrics.cost_usd["stub-model"] == pytest.approx(sum(usage_of(s)["c"] for s in env.state.values()))


class Gate:
    entered: asyncio.Event
    release: asyncio.Event


async def two_calls(event: InputEvent, ctx: RunnerContext) -> None:
    setup = ctx.get_resource("model", ResourceType.CHAT_MODEL)
    first = await ctx.durable_execute_async(setup.chat, [ChatMessage(role=MessageRole.USER, content="first call")])
    Gate.entered.set()
    await Gate.release.wait()
    second = await ctx.durable_execute_async(setup.chat, [ChatMessage(role=MessageRole.USER, content="second")])
    ctx.send_event(OutputEvent(output=[first.message.content, second.message.content]))


def test_a_replayed_run_does_not_count_its_journaled_call_again(stub_llm: StubLLMServer) -> None:
    """The state taken while the action is in flight holds the first call's result and its usage; a
    worker resuming from it reuses the result and counts only the second call."""
    agent = Agent()
    agent.add_resource(CONNECTION, stub_connection(stub_llm))
    agent.add_resource("model", ResourceDescriptor(clazz=OpenAIChatModelSetup, connection=CONNECTION,
                                                   model="stub-model"))
    agent.add_action("two_calls", [InputEvent], two_calls)
    config = make_config(budgets={"prices": PRICES})

    async def crash_then_replay() -> tuple[bytes, bytes, list[Any]]:
        Gate.entered, Gate.release = asyncio.Event(), asyncio.Event()
        plan = AgentPlan.from_agent(agent, config)
        crashed = Engine(plan)
        crashed.submit("k", "go", position=7, meta="m7")
        await Gate.entered.wait()
        (mid,) = crashed.collect()
        await crashed.close()  # the crash: the run never finished
        Gate.release.set()
        resumed = Engine(AgentPlan.from_agent(agent, config), state_loader=lambda _key: mid.state)
        resumed.submit("k", "go", position=7, meta="m7")
        await resumed.wait_idle()
        (done,) = resumed.collect()
        await plan.aclose()
        return mid.state, done.state, done.outputs

    mid, done, outputs = run_async(crash_then_replay())
    assert usage_of(mid)["n"] == 1
    assert [r["messages"][-1]["content"] for r in stub_llm.requests] == ["first call", "second"]
    assert [output for _meta, output in outputs] == [["echo: first call", "echo: second"]]
    usage = usage_of(done)
    assert usage["n"] == 2  # 3 if the replayed first call were counted again
    assert usage["t"] == sum(sum(tokens_of(r)) for r in stub_llm.requests)


def test_spent_window_budget_dead_letters_the_keys_next_runs(make_env: EnvFactory) -> None:
    env = make_env(budgets={"tokens_per_window": 1, "on_exceeded": "dead-letter"})  # default strategy: fail
    output = run_local(env, [("a", "x"), ("a", "y"), ("b", "z"), ("a", "w")])
    assert output == [{"a": "echo: x"}, {"b": "echo: z"}]  # a's first run spends its budget; b has its own
    assert [(d["key"], d["value"], d["reason"]) for d in env.dead_letters] == [
        ("a", {"text": "y"}, "budget-exceeded"), ("a", {"text": "w"}, "budget-exceeded")]
    assert "tokens budget of the last 86400s spent" in env.dead_letters[0]["error"]


def test_lifetime_cap_dead_letters_even_when_deferring(make_env: EnvFactory) -> None:
    env = make_env(budgets={"lifetime_usd": 1e-9, "prices": PRICES, "on_exceeded": "defer"})
    output = run_local(env, [("a", "x"), ("a", "y")])
    assert output == [{"a": "echo: x"}]
    assert [d["reason"] for d in env.dead_letters] == ["budget-exceeded"]
    assert "lifetime cost budget spent" in env.dead_letters[0]["error"]


def test_a_deferred_key_waits_for_its_window_on_a_timer_while_other_keys_run(stub_llm: StubLLMServer) -> None:
    window_s = 1.2
    agent = chat_agent()
    agent.add_resource(CONNECTION, stub_connection(stub_llm))
    config = make_config(budgets={"window_s": window_s, "key_prefixes": {"slow-": {"tokens_per_window": 1}}})

    async def main() -> tuple[list[Any], list[Any], float, float]:
        plan = AgentPlan.from_agent(agent, config)
        engine = Engine(plan)
        started = time.monotonic()
        for position, (key, text) in enumerate([("slow-a", "x"), ("slow-a", "y"), ("fast", "z"), ("fast", "w")]):
            engine.submit(key, {"text": text}, position=position, meta=position)
        await engine.wait_quiet()  # every key idle except the deferred one
        early = [(d.key, output) for d in engine.collect() for _meta, output in d.outputs]
        cpu = time.process_time()
        await engine.wait_idle()
        cpu_while_deferred = time.process_time() - cpu
        late = [(d.key, output) for d in engine.collect() for _meta, output in d.outputs]
        await plan.aclose()
        return early, late, time.monotonic() - started, cpu_while_deferred

    early, late, elapsed, cpu = run_async(main())
    assert sorted(early) == [("fast", "echo: w"), ("fast", "echo: z"), ("slow-a", "echo: x")]
    assert late == [("slow-a", "echo: y")]
    # The first call's bucket (window_s / 24 wide) leaves the window after window_s at most one bucket late.
    assert window_s * 0.9 <= elapsed < window_s * 1.1 + 2.0
    assert cpu < 0.3  # a timer, not a polling loop


def test_overrides_by_key_prefix_then_tenant() -> None:
    policy = BudgetPolicy(BudgetSettings.model_validate({
        "tokens_per_window": 100, "usd_per_window": 1.0, "prices": {"m": {"prompt": 1, "completion": 1}},
        "key_prefixes": {"vip-": {"tokens_per_window": 1000}, "vip-gold-": {"tokens_per_window": 5000}},
        "tenant_field": "tenant", "tenants": {"acme": {"usd_per_window": 9.0, "on_exceeded": "dead-letter"}}}))
    assert policy.limits_for("user", {}).tokens_per_window == 100
    assert policy.limits_for("vip-1", {}).tokens_per_window == 1000
    assert policy.limits_for("vip-gold-1", {}).tokens_per_window == 5000  # the longest prefix wins
    acme = policy.limits_for("vip-1", {"tenant": "acme"})
    assert (acme.tokens_per_window, acme.usd_per_window, acme.on_exceeded) == (1000, 9.0, OnExceeded.DEAD_LETTER)
    assert policy.limits_for("user", {"tenant": "other"}).usd_per_window == 1.0


def test_window_usage_expires_bucket_by_bucket() -> None:
    now = [1_000_000.0]
    policy = BudgetPolicy(BudgetSettings(window_s=240.0, tokens_per_window=100), clock=lambda: now[0])
    usage = {"w": [], "t": 0, "c": 0.0, "n": 0}
    policy.record(usage, "m", 60, 0)
    now[0] += 100
    policy.record(usage, "m", 50, 0)  # 110 tokens in the window: refused until the first 60 leave it
    limits = policy.limits_for("k", {})
    refusal = policy.refusal(usage, limits)
    assert refusal is not None and refusal.wake_at == 1_000_000.0 + 10 + 240  # end of its 10 s bucket + window
    now[0] = refusal.wake_at
    assert policy.refusal(usage, limits) is None
    assert (usage["t"], usage["n"]) == (110, 2)


def test_prices_match_exact_then_dated_names_then_the_default(tmp_path: Path) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("gpt-4o: {prompt: 2.5, completion: 10}\n'*': {prompt: 1, completion: 1}\n")
    policy = BudgetPolicy(BudgetSettings.model_validate({"prices_file": str(prices),
                                                         "prices": {"gpt-4o-mini": {"prompt": 0.15,
                                                                                    "completion": 0.6}}}))
    assert policy.cost("gpt-4o-mini", 1_000_000, 0) == pytest.approx(0.15)
    assert policy.cost("gpt-4o-mini-2024-07-18", 0, 1_000_000) == pytest.approx(0.6)
    assert policy.cost("gpt-4o-2024-08-06", 1_000_000, 0) == pytest.approx(2.5)
    assert policy.cost("llama", 500_000, 500_000) == pytest.approx(1.0)


@pytest.mark.parametrize(("budgets", "message"), [
    ({"usd_per_window": 1.0}, "budgets.usd_per_window is a USD limit but no prices"),
    ({"tenant_field": "t", "tenants": {"a": {"lifetime_usd": 1}}}, "budgets.tenants.a.lifetime_usd is a USD limit"),
    ({"tenants": {"acme": {"lifetime_tokens": 5}}}, "budgets.tenants needs budgets.tenant_field"),
    ({"prices_file": "/nonexistent/prices.yaml"}, "budgets.prices_file /nonexistent/prices.yaml"),
    ({"on_exceeded": "sleep"}, "on_exceeded"),
    ({"key_prefixes": {"a-": {"tokens_per_day": 3}}}, "tokens_per_day"),
])
def test_bad_budget_configuration_fails_at_load(tmp_path: Path, budgets: dict[str, Any], message: str) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(json.dumps({"budgets": budgets}))
    with pytest.raises(AgentPlanError, match="invalid agent configuration") as error:
        AgentConfiguration.load(config, env={})
    assert message in str(error.value)
