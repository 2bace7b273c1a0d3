"""The engine: per-key ordering, memory lifetimes, concurrency bounds, durable calls and replay,
error-handling strategies. Driven directly (``Engine.submit`` / ``collect``) or through the local
environment; model calls go to the stub over HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from agentplan import (
    ActionError,
    Agent,
    AgentPlan,
    AgentRunError,
    ChatMessage,
    ChatRequestEvent,
    ChatResponseEvent,
    DurableCallError,
    Engine,
    ErrorHandlingStrategy,
    Event,
    InputEvent,
    KeyDelta,
    LocalExecutionEnvironment,
    OpenAIChatModelSetup,
    OutputEvent,
    ResourceDescriptor,
    ResourceType,
    RunnerContext,
    TransientError,
)
from agentplan.config import RETRY_AFTER_MAX_S, AgentConfiguration
from agentplan.metrics import RecordingMetrics
from agentplan.runtime.engine import IDLE_SLOT_OVERHEAD_BYTES
from agentplan.testing.llm_stub import StubLLMServer, StubReply, default_responder
from tests.agentplan.conftest import EnvFactory
from tests.agentplan.support import CONNECTION, make_config, run_async, stub_connection

Action = Callable[[Event, RunnerContext], Any]


def agent_of(*actions: tuple[str, list[type[Event]], Action]) -> Agent:
    agent = Agent()
    for name, events, func in actions:
        agent.add_action(name, events, func)
    return agent


def engine_for(agent: Agent, *, state_loader: Any = None, metrics: Any = None, **config: Any) -> Engine:
    return Engine(AgentPlan.from_agent(agent, make_config(**config)), state_loader=state_loader, metrics=metrics)


def outputs_of(deltas: list[KeyDelta]) -> dict[Any, list[Any]]:
    found: dict[Any, list[Any]] = {}
    for delta in deltas:
        found.setdefault(delta.key, []).extend(output for _meta, output in delta.outputs)
    return found


class Step(Event):
    label: str


# -- ordering ------------------------------------------------------------------------------------


def test_runs_of_a_key_are_sequential_in_input_order_and_keys_interleave() -> None:
    log: list[tuple[str, str, int]] = []
    started: dict[tuple[str, int], asyncio.Event] = {}
    release: dict[tuple[str, int], asyncio.Event] = {}

    async def work(event: InputEvent, ctx: RunnerContext) -> None:
        item = (ctx.key, event.input)
        log.append(("start", *item))
        started[item].set()
        await release[item].wait()
        log.append(("end", *item))
        ctx.send_event(OutputEvent(output=event.input))

    async def main() -> list[KeyDelta]:
        for key in "AB":
            for value in (1, 2, 3):
                started[(key, value)] = asyncio.Event()
                release[(key, value)] = asyncio.Event()
        engine = engine_for(agent_of(("work", [InputEvent], work)))
        for value in (1, 2, 3):
            for key in "AB":
                engine.submit(key, value)
        await started[("A", 1)].wait()
        await started[("B", 1)].wait()
        # Both keys' first runs are in flight together; no key has started its second run.
        assert not any(started[(key, 2)].is_set() or started[(key, 3)].is_set() for key in "AB")
        assert engine.inflight_runs == 2 and engine.queued_inputs == 4
        for key, value in [("B", 1), ("B", 2), ("A", 1), ("B", 3), ("A", 2)]:
            release[(key, value)].set()
            nxt = (key, value + 1)
            if nxt in started:
                await started[nxt].wait()
        release[("A", 3)].set()
        await engine.wait_idle()
        return engine.collect()

    deltas = run_async(main())
    for key in "AB":
        assert [(kind, value) for kind, k, value in log if k == key] == [
            ("start", 1), ("end", 1), ("start", 2), ("end", 2), ("start", 3), ("end", 3)]
    ends = [(k, v) for kind, k, v in log if kind == "end"]
    assert ends == [("B", 1), ("B", 2), ("A", 1), ("B", 3), ("A", 2), ("A", 3)]  # interleaved
    assert outputs_of(deltas) == {"A": [1, 2, 3], "B": [1, 2, 3]}


def test_events_of_a_run_are_processed_in_order_by_every_matching_action() -> None:
    seen: list[str] = []

    def start(event: InputEvent, ctx: RunnerContext) -> None:
        seen.append("start")
        ctx.send_event(Step(label="s1"))
        ctx.send_event(Step(label="s2"))
        ctx.send_event(OutputEvent(output="first"))

    def step_a(event: Step, ctx: RunnerContext) -> None:
        seen.append(f"a:{event.label}")
        if event.label == "s1":
            ctx.send_event(Step(label="s3"))

    def step_b(event: Step, ctx: RunnerContext) -> None:
        seen.append(f"b:{event.label}")
        ctx.send_event(OutputEvent(output=event.label))

    def on_output(event: OutputEvent, ctx: RunnerContext) -> None:
        seen.append("output-action")  # OutputEvents leave the agent; no action sees them

    agent = agent_of(("start", [InputEvent], start), ("step_a", [Step], step_a), ("step_b", [Step], step_b),
                     ("on_output", [OutputEvent], on_output))

    async def main() -> list[KeyDelta]:
        engine = engine_for(agent)
        engine.submit("k", None)
        await engine.wait_idle()
        return engine.collect()

    deltas = run_async(main())
    assert seen == ["start", "a:s1", "b:s1", "a:s2", "b:s2", "a:s3", "b:s3"]
    assert outputs_of(deltas) == {"k": ["first", "s1", "s2", "s3"]}


# -- memory lifetimes ------------------------------------------------------------------------------


def remember(event: InputEvent, ctx: RunnerContext) -> None:
    before = ctx.sensory_memory.get("mark")
    ctx.sensory_memory.set("mark", event.input)
    count = ctx.short_term_memory.get("count", 0) + 1
    ctx.short_term_memory.set("count", count)
    ctx.short_term_memory.set("inputs", [*ctx.short_term_memory.get("inputs", []), event.input])
    ctx.send_event(Step(label=str(before)))


def report(event: Step, ctx: RunnerContext) -> None:
    ctx.send_event(OutputEvent(output={
        "sensory_before": event.label, "sensory_in_run": ctx.sensory_memory.get("mark"),
        "count": ctx.short_term_memory.get("count"), "inputs": ctx.short_term_memory.get("inputs")}))


MEMORY_AGENT = agent_of(("remember", [InputEvent], remember), ("report", [Step], report))


def test_sensory_memory_is_per_run_and_short_term_memory_per_key() -> None:
    async def main() -> list[KeyDelta]:
        engine = engine_for(MEMORY_AGENT)
        for key, value in [("a", "a1"), ("b", "b1"), ("a", "a2"), ("a", "a3")]:
            engine.submit(key, value)
        await engine.wait_idle()
        return engine.collect()

    out = outputs_of(run_async(main()))
    assert out["a"] == [
        {"sensory_before": "None", "sensory_in_run": "a1", "count": 1, "inputs": ["a1"]},
        {"sensory_before": "None", "sensory_in_run": "a2", "count": 2, "inputs": ["a1", "a2"]},
        {"sensory_before": "None", "sensory_in_run": "a3", "count": 3, "inputs": ["a1", "a2", "a3"]},
    ]
    assert out["b"] == [{"sensory_before": "None", "sensory_in_run": "b1", "count": 1, "inputs": ["b1"]}]


def test_short_term_memory_persists_across_execute_calls_of_a_local_env(make_env: EnvFactory) -> None:
    env = make_env()
    output = env.from_list([{"key": "a", "value": "a1"}, {"key": "a", "value": "a2"}]).apply(MEMORY_AGENT).to_list()
    env.execute()
    assert [entry["a"]["count"] for entry in output] == [1, 2]
    env.from_list([{"key": "a", "value": "a3"}, {"key": "b", "value": "b1"}]).apply(MEMORY_AGENT)
    env.execute()
    assert env.to_list() is output  # the same list, extended
    assert output[2] == {"a": {"sensory_before": "None", "sensory_in_run": "a3", "count": 3,
                               "inputs": ["a1", "a2", "a3"]}}
    assert output[3] == {"b": {"sensory_before": "None", "sensory_in_run": "b1", "count": 1, "inputs": ["b1"]}}
    assert set(env.state) == {"a", "b"}


def test_released_keys_reload_their_state() -> None:
    store: dict[Any, bytes] = {}

    async def main() -> list[Any]:
        engine = engine_for(MEMORY_AGENT, state_loader=store.get, idle_state_cache_bytes=0)
        engine.submit("a", "a1")
        await engine.wait_idle()
        deltas = engine.collect()
        store.update({d.key: d.state for d in deltas})
        engine.release(deltas)
        assert engine.key_count() == 0
        assert engine.collect() == []  # nothing changed since
        engine.submit("a", "a2")
        await engine.wait_idle()
        return outputs_of(engine.collect())["a"]

    assert [o["inputs"] for o in run_async(main())] == [["a1", "a2"]]


class CountingStore(dict):  # type: ignore[type-arg]
    """A state store that counts reads, to tell a cached key from a reloaded one."""

    reads = 0

    def load(self, key: Any) -> bytes | None:
        self.reads += 1
        return self.get(key)


async def _round(engine: Engine, store: CountingStore, inputs: list[tuple[str, str]]) -> dict[Any, list[Any]]:
    """Submit, wait, persist and release, as a driver does at each commit."""
    for key, value in inputs:
        engine.submit(key, value)
    await engine.wait_idle()
    deltas = engine.collect()
    store.update({d.key: d.state for d in deltas})
    engine.release(deltas)
    return outputs_of(deltas)


def test_idle_keys_stay_cached_and_skip_the_state_read() -> None:
    store = CountingStore()

    async def main() -> None:
        engine = engine_for(MEMORY_AGENT, state_loader=store.load)
        await _round(engine, store, [("a", "a1"), ("b", "b1")])
        assert store.reads == 2 and engine.key_count() == 0 and engine.cached_key_count() == 2
        out = await _round(engine, store, [("a", "a2")])
        assert store.reads == 2, "a cached key must not be read from the store again"
        assert out["a"][-1]["inputs"] == ["a1", "a2"]
        assert engine.cached_key_count() == 2

    run_async(main())


def test_idle_state_cache_evicts_least_recently_used_keys_over_budget() -> None:
    from agentplan.runtime.engine import DECODED_STATE_FACTOR, IDLE_SLOT_OVERHEAD_BYTES

    store = CountingStore()

    async def main() -> None:
        # Room for two small keys, not three.
        engine = engine_for(MEMORY_AGENT, state_loader=store.load,
                            idle_state_cache_bytes=2 * IDLE_SLOT_OVERHEAD_BYTES + 2 * DECODED_STATE_FACTOR * 200)
        await _round(engine, store, [("a", "a1"), ("b", "b1")])
        await _round(engine, store, [("a", "a2")])  # a is now the most recently used
        await _round(engine, store, [("c", "c1")])  # over budget: b, the least recently used, leaves
        assert engine.cached_key_count() == 2
        reads = store.reads
        out = await _round(engine, store, [("b", "b2"), ("a", "a3")])
        assert store.reads == reads + 1, "only the evicted key is read from the store"
        assert out["b"][-1]["inputs"] == ["b1", "b2"] and out["a"][-1]["inputs"] == ["a1", "a2", "a3"]

    run_async(main())


def test_cancelled_keys_leave_the_idle_state_cache() -> None:
    """A revoked partition's keys may change on another worker: they must be read again."""
    store = CountingStore()

    async def main() -> None:
        engine = engine_for(MEMORY_AGENT, state_loader=store.load)
        await _round(engine, store, [("a", "a1"), ("b", "b1")])
        engine.cancel_keys(lambda key: key == "a")
        assert engine.cached_key_count() == 1
        store["a"] = (await _state_written_elsewhere(store))  # another owner ran a2 meanwhile
        reads = store.reads
        out = await _round(engine, store, [("a", "a3")])
        assert store.reads == reads + 1
        assert out["a"][-1]["inputs"] == ["a1", "a2", "a3"]

    run_async(main())


async def _state_written_elsewhere(store: CountingStore) -> bytes:
    other = engine_for(MEMORY_AGENT, state_loader=store.get, idle_state_cache_bytes=0)
    other.submit("a", "a2")
    await other.wait_idle()
    return next(d.state for d in other.collect() if d.key == "a")


# -- concurrency ------------------------------------------------------------------------------------


def timed_start(event: InputEvent, ctx: RunnerContext) -> None:
    ctx.sensory_memory.set("started", time.monotonic())
    ctx.send_event(ChatRequestEvent(model="model", messages=[ChatMessage(content=f"hello {event.input}")]))


def timed_end(event: ChatResponseEvent, ctx: RunnerContext) -> None:
    ctx.send_event(OutputEvent(output={"input": event.response.content,
                                       "start": ctx.sensory_memory.get("started"), "end": time.monotonic()}))


def timed_agent() -> Agent:
    agent = agent_of(("timed_start", [InputEvent], timed_start), ("timed_end", [ChatResponseEvent], timed_end))
    agent.add_resource("model", ResourceDescriptor(clazz=OpenAIChatModelSetup, connection=CONNECTION, model="m"))
    return agent


def test_many_keys_are_concurrent_while_one_key_stays_sequential(
        stub_llm: StubLLMServer, make_env: EnvFactory) -> None:
    stub_llm.set_latency(200)
    inputs = [{"key": f"k{i}", "value": i} for i in range(100)]
    inputs += [{"key": "same", "value": f"s{i}"} for i in range(5)]
    env = make_env()
    output = env.from_list(inputs).apply(timed_agent()).to_list()
    started = time.monotonic()
    env.execute()
    elapsed = time.monotonic() - started

    assert len(output) == 105
    by_key: dict[str, list[dict[str, Any]]] = {}
    for entry in output:
        (key, value), = entry.items()
        by_key.setdefault(key, []).append(value)
    assert [v["input"] for v in by_key["same"]] == [f"echo: hello s{i}" for i in range(5)]
    same = by_key["same"]
    for previous, current in zip(same, same[1:]):
        assert current["start"] >= previous["end"]  # never overlapping, in input order
    assert same[-1]["end"] - same[0]["start"] >= 5 * 0.2
    distinct = [by_key[f"k{i}"][0] for i in range(100)]
    assert max(v["start"] for v in distinct) < min(v["end"] for v in distinct)  # all in flight together
    assert elapsed < 2.0, f"100 concurrent 200 ms calls plus 5 sequential ones took {elapsed:.2f}s"
    assert stub_llm.request_count == 105


def test_max_concurrent_runs_bounds_runs_in_flight() -> None:
    limit, keys = 3, 8
    state: dict[str, Any] = {"now": 0, "max": 0}

    async def hold(event: InputEvent, ctx: RunnerContext) -> None:
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
        if state["now"] == limit:
            state["full"].set()
        await state["release"].wait()
        state["now"] -= 1
        ctx.send_event(OutputEvent(output=event.input))

    async def main() -> list[KeyDelta]:
        state["full"], state["release"] = asyncio.Event(), asyncio.Event()
        engine = engine_for(agent_of(("hold", [InputEvent], hold)), max_concurrent_runs=limit)
        for i in range(keys):
            engine.submit(i, i)
        await state["full"].wait()
        assert state["now"] == limit and engine.inflight_runs == limit
        assert engine.active_keys == keys
        state["release"].set()
        await engine.wait_idle()
        return engine.collect()

    deltas = run_async(main())
    assert state["max"] == limit
    assert sorted(v for outs in outputs_of(deltas).values() for v in outs) == list(range(keys))


def test_max_concurrent_runs_bounds_model_calls_in_flight() -> None:
    limit, keys, latency_s = 4, 12, 0.1
    peaks: list[int] = []
    server: StubLLMServer

    def responder(request: dict[str, Any]) -> StubReply:
        peaks.append(server.stats()["in_flight"])  # this request included
        return default_responder(request)

    server = StubLLMServer(responder=responder, latency_ms=latency_s * 1000).start()
    try:
        env = LocalExecutionEnvironment(config=make_config(max_concurrent_runs=limit))
        env.add_resource(CONNECTION, ResourceType.CHAT_MODEL_CONNECTION, stub_connection(server))
        output = env.from_list([{"key": i, "value": i} for i in range(keys)]).apply(timed_agent()).to_list()
        started = time.monotonic()
        env.execute()
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    assert len(output) == keys
    assert max(peaks) == limit
    assert elapsed >= (keys // limit) * latency_s


# -- durable calls and replay -------------------------------------------------------------------------


class Durable:
    """Shared state of the replay test's action (events are created inside the loop)."""

    calls: list[str] = []
    recorded: asyncio.Event
    gate: asyncio.Event


async def expensive(x: str) -> dict[str, str]:
    Durable.calls.append(x)
    return {"value": f"{x}-{len(Durable.calls)}"}


async def durable_action(event: InputEvent, ctx: RunnerContext) -> None:
    attempts = ctx.short_term_memory.get("attempts", 0) + 1
    ctx.short_term_memory.set("attempts", attempts)
    result = await ctx.durable_execute_async(expensive, event.input)
    counted = ctx.durable_execute(lambda: len(Durable.calls))
    Durable.recorded.set()
    await Durable.gate.wait()
    ctx.send_event(OutputEvent(output={"result": result, "counted": counted, "attempts": attempts}))


def test_durable_results_are_replayed_from_the_journal() -> None:
    Durable.calls = []
    agent = agent_of(("durable_action", [InputEvent], durable_action))

    async def main() -> None:
        Durable.recorded, Durable.gate = asyncio.Event(), asyncio.Event()
        first = engine_for(agent)
        first.submit("k", "x", position=5, meta="m5")
        await Durable.recorded.wait()
        deltas = first.collect()  # mid-action: the journal holds both durable results
        assert [(d.key, d.outputs, d.finished) for d in deltas] == [("k", [], [])]
        blob = deltas[0].state
        json.loads(blob)  # plain JSON
        await first.close()
        assert Durable.calls == ["x"]

        # A new engine (a restart) restores the key and re-runs the in-flight action.
        Durable.gate.set()
        second = engine_for(agent, state_loader={"k": blob}.get)
        second.submit("k", "older", position=4, meta="m4")  # before the restored run: already done
        second.submit("k", "x", position=5, meta="m5-again")
        second.submit("k", "x", position=5, meta="m5-dup")  # at the recorded progress: skipped
        await second.wait_idle()
        (delta,) = second.collect()
        assert Durable.calls == ["x"]  # the durable function was NOT called again
        assert delta.outputs == [("m5-again", {"result": {"value": "x-1"}, "counted": 1, "attempts": 1})]
        assert delta.skipped == ["m4", "m5-dup"]
        assert delta.finished == ["m4", "m5-again", "m5-dup"]
        assert delta.failures == []

        # Later inputs run normally on the restored memory.
        third = engine_for(agent, state_loader={"k": delta.state}.get)
        third.submit("k", "x", position=5, meta="replayed")
        third.submit("k", "y", position=6, meta="m6")
        await third.wait_idle()
        (later,) = third.collect()
        assert later.skipped == ["replayed"]
        assert later.outputs == [("m6", {"result": {"value": "y-2"}, "counted": 2, "attempts": 2})]

    run_async(main())


def test_snapshot_between_actions_resumes_at_the_next_action() -> None:
    ran: list[str] = []
    state: dict[str, asyncio.Event] = {}

    def first(event: InputEvent, ctx: RunnerContext) -> None:
        ran.append("first")
        ctx.sensory_memory.set("from_first", event.input)
        ctx.send_event(Step(label="next"))

    async def second(event: Step, ctx: RunnerContext) -> None:
        ran.append("second")
        state["entered"].set()
        await state["gate"].wait()
        ctx.send_event(OutputEvent(output=ctx.sensory_memory.get("from_first")))

    agent = agent_of(("first", [InputEvent], first), ("second", [Step], second))

    async def main() -> KeyDelta:
        state["entered"], state["gate"] = asyncio.Event(), asyncio.Event()
        engine = engine_for(agent)
        engine.submit("k", "payload", position=0)
        await state["entered"].wait()
        blob = engine.collect()[0].state
        await engine.close()
        state["gate"].set()
        resumed = engine_for(agent, state_loader={"k": blob}.get)
        resumed.submit("k", "payload", position=0, meta="again")
        await resumed.wait_idle()
        return resumed.collect()[0]

    delta = run_async(main())
    assert ran == ["first", "second", "second"]  # the finished first action is not repeated
    assert delta.outputs == [("again", "payload")]  # sensory memory survived the restart


def touch_memory_inside(ctx: RunnerContext) -> None:
    ctx.durable_execute(lambda: ctx.short_term_memory.get("a"))


def captured_memory_inside(ctx: RunnerContext) -> None:
    memory = ctx.sensory_memory
    ctx.durable_execute(lambda: memory.set("a", 1))


def send_inside(ctx: RunnerContext) -> None:
    ctx.durable_execute(lambda: ctx.send_event(OutputEvent(output=1)))


async def memory_in_thread(ctx: RunnerContext) -> None:
    memory = ctx.short_term_memory
    await ctx.durable_execute_async(lambda: memory.get("a"))


def unstorable_result(ctx: RunnerContext) -> None:
    ctx.durable_execute(lambda: object())


async def unstorable_async_result(ctx: RunnerContext) -> None:
    async def make() -> Any:
        return {1: "int keys are not JSON"}

    await ctx.durable_execute_async(make)


def coroutine_to_sync_form(ctx: RunnerContext) -> None:
    async def work() -> int:
        return 1

    ctx.durable_execute(work)


@pytest.mark.parametrize(
    "misuse, message",
    [(touch_memory_inside, "memory"), (captured_memory_inside, "memory"), (send_inside, "send_event"),
     (memory_in_thread, "memory"), (unstorable_result, "not storable"), (unstorable_async_result, "dict keys"),
     (coroutine_to_sync_form, "durable_execute_async")],
    ids=lambda p: p if isinstance(p, str) else p.__name__,
)
def test_durable_call_misuse_raises_durable_call_error(misuse: Callable[[RunnerContext], Any], message: str) -> None:
    after: list[Any] = []

    async def act(event: InputEvent, ctx: RunnerContext) -> None:
        try:
            result = misuse(ctx)
            if asyncio.iscoroutine(result):
                await result
        except DurableCallError as exc:
            after.append(str(exc))
            ctx.short_term_memory.set("after", "memory works again")  # the durable scope has ended
            ctx.send_event(OutputEvent(output=ctx.short_term_memory.get("after")))
            raise

    async def main() -> KeyDelta:
        engine = engine_for(agent_of(("act", [InputEvent], act)))
        engine.submit("k", 1, meta="m")
        await engine.wait_idle()
        return engine.collect()[0]

    delta = run_async(main())
    assert len(after) == 1 and message in after[0]
    ((meta, value, error),) = delta.failures
    assert (meta, value) == ("m", 1)
    assert isinstance(error, ActionError) and isinstance(error.cause, DurableCallError)
    assert delta.finished == ["m"] and delta.outputs == []  # a failed action's events are dropped


# -- error handling strategies ---------------------------------------------------------------------------


class Flaky:
    """An action failing its first ``failures`` calls per input; records calls and memory writes."""

    def __init__(self, failures: int, fail_on: set[Any] | None = None) -> None:
        self.failures = failures
        self.fail_on = fail_on
        self.calls: list[tuple[Any, Any]] = []

    def __call__(self, event: InputEvent, ctx: RunnerContext) -> None:
        seen = ctx.short_term_memory.get("seen", [])
        seen.append(event.input)  # in place on the value read: must not leak into memory
        ctx.short_term_memory.set("seen", seen)
        ctx.sensory_memory.set("tmp", "dirty")
        self.calls.append((event.input, ctx.short_term_memory.get("seen")))
        failing = self.fail_on is None or event.input in self.fail_on
        if failing and sum(1 for value, _ in self.calls if value == event.input) <= self.failures:
            raise ValueError(f"boom on {event.input}")
        ctx.send_event(OutputEvent(output={"seen": seen}))


def after_flaky(event: InputEvent, ctx: RunnerContext) -> None:
    ctx.send_event(OutputEvent(output={"after": ctx.short_term_memory.get("seen"),
                                       "tmp": ctx.sensory_memory.get("tmp")}))


def flaky_env(make_env: EnvFactory, flaky: Flaky, strategy: ErrorHandlingStrategy, **config: Any) -> Any:
    env = make_env(error_handling_strategy=strategy, **config)
    agent = agent_of(("flaky", [InputEvent], flaky), ("after_flaky", [InputEvent], after_flaky))
    return env.from_list([{"key": "k", "value": "a"}, {"key": "k", "value": "b"},
                          {"key": "other", "value": "ok"}]).apply(agent)


def test_fail_strategy_raises_from_execute(make_env: EnvFactory) -> None:
    flaky = Flaky(failures=1, fail_on={"a"})
    env = flaky_env(make_env, flaky, ErrorHandlingStrategy.FAIL)
    with pytest.raises(AgentRunError) as info:
        env.execute()
    assert info.value.key == "k"
    assert isinstance(info.value.cause, ValueError) and str(info.value.cause) == "boom on a"
    assert [value for value, _ in flaky.calls] == ["a", "b", "ok"]  # no retry; later runs went on
    # The failed run left no output and no memory writes behind.
    assert env.to_list() == [{"k": {"seen": ["b"]}}, {"k": {"after": ["b"], "tmp": "dirty"}},
                             {"other": {"seen": ["ok"]}}, {"other": {"after": ["ok"], "tmp": "dirty"}}]


def test_dead_letter_strategy_collects_failures(make_env: EnvFactory) -> None:
    flaky = Flaky(failures=1)
    env = flaky_env(make_env, flaky, ErrorHandlingStrategy.DEAD_LETTER)
    env.execute()
    assert env.dead_letters == [
        {"key": "k", "value": "a", "error": "action 'flaky' failed: ValueError: boom on a"},
        {"key": "k", "value": "b", "error": "action 'flaky' failed: ValueError: boom on b"},
        {"key": "other", "value": "ok", "error": "action 'flaky' failed: ValueError: boom on ok"},
    ]
    assert env.to_list() == []
    assert env.metrics.action_errors == {"flaky": 3}


def test_ignore_strategy_skips_the_action_and_rolls_back_its_writes(make_env: EnvFactory) -> None:
    flaky = Flaky(failures=1)
    env = flaky_env(make_env, flaky, ErrorHandlingStrategy.IGNORE)
    env.execute()
    assert env.dead_letters == []
    # Every flaky call failed (one failure per input); the next action still ran, without its writes.
    assert env.to_list() == [{"k": {"after": None, "tmp": None}}, {"k": {"after": None, "tmp": None}},
                             {"other": {"after": None, "tmp": None}}]


def test_retry_strategy_retries_with_memory_rolled_back(make_env: EnvFactory) -> None:
    flaky = Flaky(failures=2)
    env = flaky_env(make_env, flaky, ErrorHandlingStrategy.RETRY, max_retries=3)
    env.execute()
    assert env.dead_letters == []
    # Each attempt starts from the memory before the action: failed attempts' writes are undone.
    assert [seen for value, seen in flaky.calls if value == "b"] == [["a", "b"]] * 3
    assert env.to_list() == [
        {"k": {"seen": ["a"]}}, {"k": {"after": ["a"], "tmp": "dirty"}},
        {"k": {"seen": ["a", "b"]}}, {"k": {"after": ["a", "b"], "tmp": "dirty"}},
        {"other": {"seen": ["ok"]}}, {"other": {"after": ["ok"], "tmp": "dirty"}},
    ]


def test_retry_strategy_fails_after_max_retries(make_env: EnvFactory) -> None:
    flaky = Flaky(failures=10)
    env = flaky_env(make_env, flaky, ErrorHandlingStrategy.RETRY, max_retries=2)
    with pytest.raises(AgentRunError) as info:
        env.execute()
    assert info.value.key == "k" and isinstance(info.value.cause, ValueError)
    assert [value for value, _ in flaky.calls].count("a") == 3  # one call and two retries
    assert len(env.dead_letters) == 3


def test_retry_runs_durable_calls_again() -> None:
    # A retry after a failure re-executes the action's durable calls; replaying the failed attempt's
    # journal would hand the same (possibly bad) results back and make the retry pointless.
    answers = iter(["garbage", "42"])
    calls: list[str] = []

    def ask() -> str:
        calls.append("ask")
        return next(answers)

    def parse(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.send_event(OutputEvent(output=int(ctx.durable_execute(ask))))

    async def main() -> KeyDelta:
        engine = engine_for(agent_of(("parse", [InputEvent], parse)),
                            error_handling_strategy=ErrorHandlingStrategy.RETRY, max_retries=2)
        engine.submit("k", None)
        await engine.wait_idle()
        return engine.collect()[0]

    delta = run_async(main())
    assert calls == ["ask", "ask"]
    assert [out for _meta, out in delta.outputs] == [42]


def test_transient_errors_are_retried_whatever_the_strategy() -> None:
    attempts: list[int] = []
    metrics = RecordingMetrics()

    def overloaded(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.short_term_memory.set("n", ctx.short_term_memory.get("n", 0) + 1)
        attempts.append(ctx.short_term_memory.get("n"))
        if len(attempts) < 3:
            raise TransientError("busy", kind="busy", retry_after_s=0.01)
        ctx.send_event(OutputEvent(output=ctx.short_term_memory.get("n")))

    async def main(limit: int | None) -> KeyDelta:
        attempts.clear()
        engine = engine_for(agent_of(("overloaded", [InputEvent], overloaded)), metrics=metrics,
                            transient_retry_limit=limit)
        engine.submit("k", None)
        await engine.wait_idle()
        return engine.collect()[0]

    delta = run_async(main(None))
    assert [out for _m, out in delta.outputs] == [1]
    assert attempts == [1, 1, 1]
    assert metrics.transient_retries == {"busy": 2}

    limited = run_async(main(1))
    ((_meta, _value, error),) = limited.failures
    assert isinstance(error.cause, TransientError)
    assert attempts == [1, 1]


def test_the_transient_budget_is_per_durable_call() -> None:
    """Two calls in one action, each failing twice: with a limit of 2 both succeed, and the journal
    keeps the first call's result while the second one is retried."""
    failures = {"first": 2, "second": 2}
    made: list[str] = []

    async def call(name: str) -> str:
        made.append(name)
        if failures[name]:
            failures[name] -= 1
            raise TransientError(f"{name} busy", kind="busy")
        return name.upper()

    async def two_calls(event: InputEvent, ctx: RunnerContext) -> None:
        first = await ctx.durable_execute_async(call, "first")
        second = await ctx.durable_execute_async(call, "second")
        ctx.send_event(OutputEvent(output=[first, second]))

    async def main() -> KeyDelta:
        engine = engine_for(agent_of(("two", [InputEvent], two_calls)), transient_retry_limit=2,
                            retry_backoff_s=0.001)
        engine.submit("k", None)
        await engine.wait_idle()
        return engine.collect()[0]

    delta = run_async(main())
    assert delta.failures == []
    assert [out for _m, out in delta.outputs] == [["FIRST", "SECOND"]]
    assert made == ["first"] * 3 + ["second"] * 3


def test_retry_delays_are_jittered_and_retry_after_is_waited_in_full() -> None:
    config = AgentConfiguration(retry_backoff_s=1.0, retry_backoff_max_s=8.0)
    assert [config.retry_delay(a, rng=lambda: 0.0) for a in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert [config.retry_delay(a, rng=lambda: 0.999999) for a in range(5)] == pytest.approx([1, 2, 4, 8, 8])
    assert config.retry_delay(0, retry_after_s=20.0, rng=lambda: 0.0) == 20.0  # beyond the backoff cap
    assert config.retry_delay(0, retry_after_s=20.0, rng=lambda: 0.999999) == pytest.approx(22.0)
    assert config.retry_delay(0, retry_after_s=10_000.0, rng=lambda: 0.0) == RETRY_AFTER_MAX_S
    assert config.retry_delay(3, retry_after_s=-1.0) == 0.0
    draws = {config.retry_delay(2) for _ in range(20)}
    assert len(draws) > 1 and all(2.0 <= d <= 4.0 for d in draws)


def test_send_event_requires_an_event() -> None:
    def bad(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.send_event("not an event")  # type: ignore[arg-type]

    async def main() -> KeyDelta:
        engine = engine_for(agent_of(("bad", [InputEvent], bad)))
        engine.submit("k", 1)
        await engine.wait_idle()
        return engine.collect()[0]

    ((_m, _v, error),) = run_async(main()).failures
    assert isinstance(error.cause, TypeError) and "expects an Event" in str(error.cause)


def test_cancel_keys_forgets_them() -> None:
    gate: dict[str, asyncio.Event] = {}

    async def block(event: InputEvent, ctx: RunnerContext) -> None:
        gate["entered"].set()
        await asyncio.Event().wait()

    async def main() -> None:
        gate["entered"] = asyncio.Event()
        engine = engine_for(agent_of(("block", [InputEvent], block)))
        engine.submit("doomed", 1)
        engine.submit("doomed", 2)
        await gate["entered"].wait()
        assert engine.cancel_keys(lambda key: key == "doomed") == 1
        await engine.wait_idle()
        assert engine.key_count() == 0 and engine.queued_inputs == 0 and engine.inflight_runs == 0

    run_async(main())


def test_a_slot_the_engine_forgets_lets_go_of_its_memory_hooks() -> None:
    """Released without the idle cache, or evicted from it, a key's slot detaches its memory's hooks (they refer
    back to the slot: a cycle only the cyclic GC would free); the key's next input still sees its state."""
    store = CountingStore()

    async def main(cache_bytes: int, keys: list[str]) -> tuple[list[Any], dict[Any, list[Any]]]:
        engine = engine_for(MEMORY_AGENT, state_loader=store.load, idle_state_cache_bytes=cache_bytes)
        for key in keys:
            engine.submit(key, f"{key}1")
        await engine.wait_idle()
        slots = [engine._slots[key] for key in keys]
        deltas = engine.collect()
        store.update({d.key: d.state for d in deltas})
        engine.release(deltas)
        hooks = [(s.memory._guard, s.memory._before_write) for s in slots]
        return hooks, await _round(engine, store, [(keys[0], f"{keys[0]}2")])

    hooks, outputs = run_async(main(0, ["a"]))
    assert [h[1] for h in hooks] == [None]
    assert [o["inputs"] for o in outputs["a"]] == [["a1", "a2"]]
    # A budget for about one idle key: the first of two is evicted (detached), the second stays cached (hooked).
    hooks, outputs = run_async(main(IDLE_SLOT_OVERHEAD_BYTES + 2000, ["b", "c"]))
    assert hooks[0][1] is None and hooks[1][1] is not None
    assert [o["inputs"] for o in outputs["b"]] == [["b1", "b2"]]


# -- containers made on demand (fewer objects for the cyclic GC per run in flight) --------------------


def test_keys_without_outputs_collect_empty_lists_of_their_own() -> None:
    def quiet(event: InputEvent, ctx: RunnerContext) -> None:
        if event.input == "speak":
            ctx.send_event(OutputEvent(output="said"))

    async def main() -> tuple[list[KeyDelta], list[KeyDelta], Engine]:
        engine = engine_for(agent_of(("quiet", [InputEvent], quiet)))
        engine.submit("a", "hush", meta="a1")
        engine.submit("b", "hush", meta="b1")
        await engine.wait_idle()
        first = engine.collect()
        engine.submit("a", "speak", meta="a2")
        await engine.wait_idle()
        return first, engine.collect(), engine

    first, second, engine = run_async(main())
    a, b = sorted(first, key=lambda d: d.key)
    assert (a.outputs, a.finished, a.failures, a.skipped, a.requests, list(a.log)) == ([], ["a1"], [], [], [], [])
    assert b.finished == ["b1"]
    assert a.outputs is not b.outputs and a.failures is not b.failures  # not one shared list
    a.outputs.append(("x", "y"))  # a driver may keep or change what it collected
    assert [(d.outputs, d.finished) for d in second] == [([("a2", "said")], ["a2"])]
    assert b.outputs == []
    slot = engine._slots["a"]
    assert (slot.outputs, slot.finished, slot.failures, slot.skipped, slot.requests, slot.log) == (None,) * 6


def test_sensory_memory_is_made_by_the_first_access_and_rolled_back_on_retry() -> None:
    gate: dict[str, asyncio.Event] = {}
    attempts: list[Any] = []

    async def idle(event: InputEvent, ctx: RunnerContext) -> None:
        gate["entered"].set()
        await gate["go"].wait()

    def flaky(event: InputEvent, ctx: RunnerContext) -> None:
        attempts.append(ctx.sensory_memory.get("n"))
        ctx.sensory_memory.set("n", len(attempts))
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails after writing sensory memory")
        ctx.send_event(OutputEvent(output=ctx.sensory_memory.get("n")))

    async def untouched() -> tuple[bytes | None, Any]:
        gate["entered"], gate["go"] = asyncio.Event(), asyncio.Event()
        engine = engine_for(agent_of(("idle", [InputEvent], idle)))
        engine.submit("k", "v", position=3)
        await gate["entered"].wait()
        run = engine._slots["k"].run
        blob = engine.collect()[0].state
        gate["go"].set()
        await engine.wait_idle()
        return blob, run.sensory if run is not None else "no run"

    blob, sensory = run_async(untouched())
    assert sensory is None
    assert blob is not None and json.loads(blob)["r"]["s"] == {}  # the encoding of an empty tree, as before

    async def retried() -> list[KeyDelta]:
        engine = engine_for(agent_of(("flaky", [InputEvent], flaky)),
                            error_handling_strategy=ErrorHandlingStrategy.RETRY, max_retries=1)
        engine.submit("k", "v")
        await engine.wait_idle()
        return engine.collect()

    assert outputs_of(run_async(retried())) == {"k": [2]}
    assert attempts == [None, None]  # the failed attempt's write was undone


def test_event_ids_count_the_events_each_action_sent() -> None:
    seen: list[tuple[str, str]] = []

    def fan_out(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.send_event(Step(label="a"))
        ctx.send_event(Step(label="b"))

    def silent(event: InputEvent, ctx: RunnerContext) -> None:
        pass  # sends nothing: the next action's events still number on from the run's count

    def step(event: Step, ctx: RunnerContext) -> None:
        seen.append((event.label, event.id))
        ctx.send_event(OutputEvent(output=event.label))

    async def main() -> list[KeyDelta]:
        engine = engine_for(agent_of(("fan_out", [InputEvent], fan_out), ("silent", [InputEvent], silent),
                                     ("step", [Step], step)))
        engine.submit("k", "v", position=7)
        await engine.wait_idle()
        return engine.collect()

    assert outputs_of(run_async(main())) == {"k": ["a", "b"]}
    assert seen == [("a", "p7.1"), ("b", "p7.2")]
