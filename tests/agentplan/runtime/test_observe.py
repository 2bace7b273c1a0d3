"""The run-observation hook on the local runner: the event log (levels, truncation, per-type levels, the
JSON-lines file) and OpenTelemetry GenAI spans (the SDK's in-memory exporter), against the stub LLM
over HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentplan import (
    Agent,
    AgentConfiguration,
    AgentPlan,
    AgentPlanError,
    Engine,
    Event,
    InputEvent,
    OutputEvent,
    RunnerContext,
)
from agentplan.eventlog import EventLogSettings
from agentplan.runtime.observe import build_observation
from agentplan.testing.llm_stub import StubLLMServer
from tests.agentplan.conftest import EnvFactory
from tests.agentplan.support import run_async
from tests.agentplan.test_builtin_actions import TOOLS, ToolAgent, run

TOOL_PROMPT = 'Price? [[tool:lookup_price {"sku": "KB-1"}]]'


def read_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def kinds(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in records if r["record"] == kind]


def in_memory_tracing() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


# -- the event log ------------------------------------------------------------------------------------


def test_event_log_file_holds_every_event_action_and_call_of_a_tool_loop(make_env: EnvFactory,
                                                                         tmp_path: Path) -> None:
    log = tmp_path / "logs" / "events.jsonl"
    env = make_env()
    env.config.set("event-log.level", "STANDARD")
    env.config.set("event-log.file", str(log))
    run(env, ToolAgent(model={"tools": TOOLS}), {"content": TOOL_PROMPT})
    records = read_log(log)
    assert {(r["key"], r["run"]) for r in records} == {("0", "r1")}
    assert [r["record"] for r in records][0] == "run_started"
    assert records[-1]["record"] == "run_finished" and records[-1]["outcome"] == "ok"
    assert [(r["event_type"], r["action"]) for r in kinds(records, "event")] == [
        ("InputEvent", None), ("ChatRequestEvent", "ask"), ("ToolRequestEvent", "chat_model_action"),
        ("ToolResponseEvent", "tool_call_action"), ("ChatResponseEvent", "chat_model_action"),
        ("OutputEvent", "answer")]
    assert [(r["action"], r["event_type"], r["outcome"]) for r in kinds(records, "action")] == [
        ("ask", "InputEvent", "ok"), ("chat_model_action", "ChatRequestEvent", "ok"),
        ("tool_call_action", "ToolRequestEvent", "ok"), ("chat_model_action", "ToolResponseEvent", "ok"),
        ("answer", "ChatResponseEvent", "ok")]
    first, second = kinds(records, "llm_call")
    assert (first["model"], first["finish_reason"], first["tool_calls"]) == ("stub-model", "tool_calls",
                                                                             ["lookup_price"])
    assert second["finish_reason"] == "stop"
    assert min(first["input_tokens"], first["output_tokens"], second["input_tokens"]) > 0
    assert env.metrics.prompt_tokens == first["input_tokens"] + second["input_tokens"]
    (tool_call,) = kinds(records, "tool_call")
    assert (tool_call["tool"], tool_call["action"], tool_call["error"]) == ("lookup_price", "tool_call_action", None)
    assert all(r["duration_ms"] >= 0 for r in records if "duration_ms" in r)


class ShoutingAgent(Agent):
    @staticmethod
    def shout(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.send_event(OutputEvent(output={"echo": event.input}))


def echo_agent() -> Agent:
    agent = Agent()
    agent.add_action("shout", [InputEvent], ShoutingAgent.shout)
    return agent


BIG = {"text": "x" * 2500, "items": list(range(30)), "deep": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}}


def test_standard_truncates_payloads_and_per_type_levels_override(make_env: EnvFactory, tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    env = make_env()
    for key, value in {"event-log.level": "standard", "event-log.file": str(log),
                       "event-log.standard.max-array-elements": 10,
                       "event-log.type.OutputEvent.level": "VERBOSE"}.items():
        env.config.set(key, value)
    run(env, echo_agent(), BIG)
    standard, verbose = (r["event"] for r in kinds(read_log(log), "event"))
    text = standard["input"]["text"]
    assert text == "x" * 2000 + "...(500 more chars)"
    assert standard["input"]["items"] == [*range(10), "...(20 more)"]
    # max-depth 5 keeps five levels of containers below the event's fields: input, deep, a, b, c
    assert standard["input"]["deep"] == {"a": {"b": {"c": {"d": "<depth limit>"}}}}
    assert verbose == {"output": {"echo": BIG}}


class NotedEvent(Event):
    """A user event with a Flink Agents 0.3 style type name."""

    EVENT_TYPE: ClassVar[str] = "_noted_event"
    text: str


def note(event: InputEvent, ctx: RunnerContext) -> None:
    ctx.send_event(NotedEvent(text="noted"))


def answer_note(event: NotedEvent, ctx: RunnerContext) -> None:
    ctx.send_event(OutputEvent(output=event.text))


def test_a_type_can_be_switched_off_by_its_event_type_and_nested_keys_work(make_env: EnvFactory,
                                                                         tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    env = make_env()
    env.config.set("event-log", {"level": "VERBOSE", "file": str(log), "type": {"_noted_event": {"level": "OFF"},
                                                                                "InputEvent": {"level": "off"}}})
    agent = Agent()
    agent.add_action("note", [InputEvent], note)
    agent.add_action("answer_note", [NotedEvent], answer_note)
    assert run(env, agent, {"n": 1}) == ["noted"]
    records = read_log(log)
    assert [r["event_type"] for r in kinds(records, "event")] == ["OutputEvent"]
    assert [r["event_type"] for r in kinds(records, "action")] == ["InputEvent", "_noted_event"]


@pytest.mark.parametrize(("setting", "value", "message"), [
    ("event-log.level", "LOUD", "event-log.level: expected OFF, STANDARD or VERBOSE, got 'LOUD'"),
    ("event-log.standard.max-depth", 0, "event-log.standard.max-depth: expected a whole number >= 1, got 0"),
    ("event-log.type.InputEvent.level", "all", "event-log.type.InputEvent.level: expected OFF, STANDARD"),
    ("event-log.colour", "red", "event-log.colour: unknown event-log setting"),
])
def test_bad_event_log_settings_fail_before_anything_runs(setting: str, value: Any, message: str,
                                                          make_env: EnvFactory, stub_llm: StubLLMServer) -> None:
    env = make_env()
    env.config.set(setting, value)
    with pytest.raises(AgentPlanError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run(env, ToolAgent(model={"tools": TOOLS}), {"content": "hi"})
    assert stub_llm.requests == []


def test_off_by_default_installs_no_hook_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = AgentConfiguration()
    assert not EventLogSettings.from_config(config).enabled
    assert build_observation(config, "agent") is None
    plan = AgentPlan.from_agent(echo_agent(), config)

    async def scenario() -> list[Any]:
        engine = Engine(plan, observation=build_observation(config, "agent"))
        engine.submit("k", {"n": 1})
        await engine.wait_idle()
        return engine.collect()

    (delta,) = run_async(scenario())
    assert delta.outputs and list(delta.log) == []
    assert list(tmp_path.iterdir()) == []


class FlakyAgent(Agent):
    """Fails its first attempt; with strategy retry the second succeeds. A durable call before the failure."""

    attempts = 0

    @staticmethod
    def act(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.durable_execute(lambda: "looked up")
        FlakyAgent.attempts += 1
        if FlakyAgent.attempts == 1:
            raise ValueError("first try fails")
        ctx.send_event(OutputEvent(output="done"))


def test_retried_attempts_and_durable_calls_are_logged(make_env: EnvFactory, tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    env = make_env(error_handling_strategy="retry", max_retries=2)
    env.config.set("event-log.level", "STANDARD")
    env.config.set("event-log.file", str(log))
    agent = Agent()
    agent.add_action("act", [InputEvent], FlakyAgent.act)
    FlakyAgent.attempts = 0
    run(env, agent, {"n": 1})
    records = read_log(log)
    assert [(r["attempt"], r["outcome"], r["error"]) for r in kinds(records, "action")] == [
        (1, "error", "ValueError: first try fails"), (2, "ok", None)]
    # the failed attempt's journal is dropped before the retry, so the call ran twice
    assert [r["function"] for r in kinds(records, "durable_call")] == [
        "FlakyAgent.act.<locals>.<lambda>", "FlakyAgent.act.<locals>.<lambda>"]
    assert kinds(records, "run_finished")[0]["outcome"] == "ok"


# -- traces ---------------------------------------------------------------------------------------------


def by_name(spans: tuple[ReadableSpan, ...], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


def test_spans_form_a_genai_tree_with_token_counts(make_env: EnvFactory, stub_llm: StubLLMServer) -> None:
    provider, exporter = in_memory_tracing()
    env = make_env()
    env.tracer_provider = provider
    run(env, ToolAgent(model={"tools": TOOLS}), {"content": TOOL_PROMPT})
    spans = exporter.get_finished_spans()
    (root,) = by_name(spans, "invoke_agent")
    assert root.name == "invoke_agent ToolAgent" and root.parent is None
    assert root.attributes is not None and root.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert {s.context.trace_id for s in spans} == {root.context.trace_id}
    actions = by_name(spans, "action ")
    assert [s.name for s in sorted(actions, key=lambda s: s.start_time or 0)] == [
        "action ask", "action chat_model_action", "action tool_call_action", "action chat_model_action",
        "action answer"]
    assert all(s.parent is not None and s.parent.span_id == root.context.span_id for s in actions)
    chats = sorted(by_name(spans, "chat "), key=lambda s: s.start_time or 0)
    assert len(chats) == 2
    chat_parents = {s.context.span_id for s in actions if s.name == "action chat_model_action"}
    for span, reason in zip(chats, ("tool_calls", "stop")):
        attributes = dict(span.attributes or {})
        assert span.parent is not None and span.parent.span_id in chat_parents
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.request.model"] == "stub-model"
        assert attributes["gen_ai.provider.name"] == "openai"
        assert attributes["gen_ai.response.finish_reasons"] == (reason,)
        assert int(attributes["gen_ai.usage.input_tokens"]) > 0 and int(attributes["gen_ai.usage.output_tokens"]) > 0
    assert sum(int((s.attributes or {})["gen_ai.usage.input_tokens"]) for s in chats) == env.metrics.prompt_tokens
    (tool_span,) = by_name(spans, "execute_tool")
    assert tool_span.name == "execute_tool lookup_price"
    assert (tool_span.attributes or {})["gen_ai.tool.name"] == "lookup_price"
    assert tool_span.parent is not None and tool_span.parent.span_id in {
        s.context.span_id for s in actions if s.name == "action tool_call_action"}


def test_run_span_continues_the_trace_its_input_carried() -> None:
    provider, exporter = in_memory_tracing()
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    seen: dict[str, dict[str, str]] = {}
    observation = build_observation(
        AgentConfiguration(), "Echo", tracer_provider=provider,
        carrier_of=lambda meta: {"traceparent": f"00-{trace_id}-{parent_id}-01"},
        on_run_span=lambda meta, carrier, context: seen.update({meta: carrier}))
    plan = AgentPlan.from_agent(echo_agent(), AgentConfiguration())

    async def scenario() -> None:
        engine = Engine(plan, observation=observation)
        engine.submit("k", {"n": 1}, meta="input-1")
        await engine.wait_idle()

    run_async(scenario())
    (root,) = by_name(exporter.get_finished_spans(), "invoke_agent")
    assert format(root.context.trace_id, "032x") == trace_id
    assert root.parent is not None and format(root.parent.span_id, "016x") == parent_id
    # what the driver writes on the run's outputs: the same trace, the run span as parent
    assert seen["input-1"]["traceparent"] == f"00-{trace_id}-{root.context.span_id:016x}-01"


GATE: dict[str, Any] = {}


async def wait_for_gate(event: InputEvent, ctx: RunnerContext) -> None:
    await ctx.durable_execute_async(GATE["open"].wait)
    ctx.send_event(OutputEvent(output="through"))


def test_records_travel_in_the_delta_of_the_state_they_describe() -> None:
    config = AgentConfiguration()
    config.set("event-log.type.OutputEvent.level", "STANDARD")  # global OFF: only these records
    agent = Agent()
    agent.add_action("gate", [InputEvent], wait_for_gate)
    plan = AgentPlan.from_agent(agent, config)

    async def scenario() -> tuple[Any, Any]:
        import asyncio

        GATE["open"] = asyncio.Event()
        engine = Engine(plan, observation=build_observation(config, "agent"))
        engine.submit("k", {"n": 1})
        await asyncio.sleep(0.01)
        (mid_run,) = engine.collect()  # the run started; its action waits
        GATE["open"].set()
        await engine.wait_idle()
        (finished,) = engine.collect()
        return mid_run, finished

    mid_run, finished = run_async(scenario())
    assert list(mid_run.log) == []  # nothing emitted after it was collected lands in it
    assert [(r["record"], r["event_type"]) for r in finished.log] == [("event", "OutputEvent")]
