"""The Flink Agents 0.3.1 API beside the 0.1.1 one: unified events and string routing, tool-call dicts,
resource names, memory references, durable calls with a reconciler, configuration keys, metric groups."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, ClassVar

import pytest

from agentplan import (
    Agent,
    AgentExecutionOptions,
    AgentPlan,
    AgentsExecutionEnvironment,
    ChatMessage,
    ChatRequestEvent,
    ChatResponseEvent,
    Engine,
    Event,
    InputEvent,
    MemoryRef,
    MemoryType,
    MessageRole,
    OutputEvent,
    ResourceDescriptor,
    ResourceName,
    ResourceType,
    RunnerContext,
    ShortTermMemoryTtlUpdate,
    Tool,
    ToolCall,
    ToolRequestEvent,
    ToolResponseEvent,
    action,
    chat_model_setup,
)
from agentplan.exceptions import AgentPlanError, MemoryValueError, ResourceError, SerializationError
from agentplan.integrations.openai import OpenAIChatModelConnection, OpenAIChatModelSetup
from agentplan.testing.llm_stub import StubLLMServer
from tests.agentplan.conftest import EnvFactory
from tests.agentplan.support import make_config, run_async


class Greeting(Event):
    """The 0.3 custom-event pattern: a type string, attributes, properties and from_event."""

    EVENT_TYPE: ClassVar[str] = "greeting"

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(type=Greeting.EVENT_TYPE, attributes={"name": name}, **kwargs)

    @classmethod
    def from_event(cls, event: Event) -> Greeting:
        result = cls(name=event.get_attr("name"))
        result.id = event.id
        return result

    @property
    def name(self) -> str:
        return self.get_attr("name")


def through_record(event: Event) -> Event:
    return Event.from_record(json.loads(json.dumps(event.to_record())))


def test_builtin_event_types_are_upstreams() -> None:
    assert [c.EVENT_TYPE for c in (InputEvent, OutputEvent, ChatRequestEvent, ChatResponseEvent, ToolRequestEvent,
                                   ToolResponseEvent)] == [
        "_input_event", "_output_event", "_chat_request_event", "_chat_response_event", "_tool_request_event",
        "_tool_response_event"]
    event = InputEvent(input={"a": 1})
    assert event.get_type() == "_input_event" and event.get_attr("input") == {"a": 1}
    assert InputEvent.from_event(event) is event


def test_unified_and_custom_events_round_trip_through_state_records() -> None:
    unified = Event(type="my_event", attributes={"n": 1, "tags": ["a"]})
    back = through_record(unified)
    assert type(back) is Event and back.get_type() == "my_event" and back.get_attr("n") == 1 and back == unified
    greeting = Greeting(name="Ada")
    back = through_record(greeting)
    assert type(back) is Greeting and back.name == "Ada" and back.id == greeting.id
    assert Greeting.from_event(Event(type="greeting", attributes={"name": "Bo"})).name == "Bo"
    back.set_attr("mood", "fine")
    assert back.get_attr("mood") == "fine" and back.get_attr("missing") is None
    with pytest.raises(TypeError, match="'when'"):
        back.set_attr("when", object())
    with pytest.raises(ValueError, match="not storable"):
        Event(type="x", attributes={"bad": object()})


def test_typed_event_records_are_unchanged_and_old_records_decode() -> None:
    record = InputEvent(id="p1.0", input="hi").to_record()
    assert record == {"type": "agentplan.events:InputEvent", "fields": {"id": "p1.0", "input": "hi"}}
    written_before = {"type": "agentplan.events:ChatResponseEvent",
                      "fields": {"id": "p1.2", "request_id": "p1.1", "structured_output": None,
                                 "response": {"__model__": "agentplan.chat_message:ChatMessage",
                                              "value": {"role": "assistant", "content": "ok", "tool_calls": [],
                                                        "extra_args": {}}}}}
    event = Event.from_record(written_before)
    assert isinstance(event, ChatResponseEvent) and event.response.content == "ok" and event.retry_count == 0


def test_from_json_takes_upstreams_shape() -> None:
    event = Event.from_json('{"type": "my_event", "attributes": {"x": 2}}')
    assert event.get_type() == "my_event" and event.get_attr("x") == 2
    assert InputEvent.from_json('{"type": "_input_event", "attributes": {"input": 5}}').input == 5
    with pytest.raises(SerializationError, match="type"):
        Event.from_json('{"attributes": {}}')


def test_tool_calls_accept_and_read_as_upstreams_dicts() -> None:
    event = ToolRequestEvent(model="m", tool_calls=[
        {"id": "u1", "type": "function", "function": {"name": "add", "arguments": {"a": 1}}, "original_id": "c1"},
        {"id": "u2", "type": "function", "function": {"name": "neg", "arguments": '{"a": 2}'}}])
    first, second = event.tool_calls
    assert isinstance(first, ToolCall) and (first.name, first.arguments, first.original_id) == ("add", {"a": 1}, "c1")
    assert second["function"] == {"name": "neg", "arguments": {"a": 2}} and second["type"] == "function"
    assert through_record(event) == event


class Routed(Agent):
    """Both conventions in one agent: class and string subscriptions, unified and custom events."""

    @action(InputEvent)
    @staticmethod
    def by_class(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.send_event(Greeting(name=event.input))

    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def by_type(event: Event, ctx: RunnerContext) -> None:
        ctx.send_event(Event(type="shout", attributes={"text": InputEvent.from_event(event).input.upper()}))

    @action(Greeting.EVENT_TYPE)
    @staticmethod
    def greet(event: Event, ctx: RunnerContext) -> None:
        ctx.send_event(OutputEvent(output=f"hello {Greeting.from_event(event).name}"))

    @action("shout")
    @staticmethod
    def shout(event: Event, ctx: RunnerContext) -> None:
        ctx.send_event(OutputEvent(output=event.get_attr("text")))


def test_actions_by_class_and_by_type_string() -> None:
    env = AgentsExecutionEnvironment.get_execution_environment()
    env.config = make_config()
    outputs = env.from_list([{"k": "a", "v": "ada"}]).apply(Routed()).to_list()
    env.execute(job_name="routing")
    assert outputs == [{"a": "hello ada"}, {"a": "ADA"}]
    plan = AgentPlan.from_agent(Routed())
    again = AgentPlan.model_validate_json(plan.model_dump_json())
    assert again.actions["shout"].events == ("shout",) and again.actions["by_class"].events == (InputEvent,)
    assert [a.name for a in again.actions_for_event(Event(type="shout"))] == ["shout"]
    with pytest.raises(AgentPlanError, match="target"):
        action("x", target=object())
    with pytest.raises(AgentPlanError, match="empty"):
        action("")


def test_resource_descriptor_forms_and_resource_names() -> None:
    by_constant = ResourceDescriptor(clazz=ResourceName.ChatModel.OPENAI_COMPLETIONS_CONNECTION, api_key="k")
    by_dotted = ResourceDescriptor(clazz="agentplan.integrations.openai.OpenAIChatModelConnection")
    by_parts = ResourceDescriptor(target_module="agentplan.integrations.openai",
                                  target_clazz="OpenAIChatModelConnection", arguments={"api_key": "k"}, timeout=3.0)
    assert by_constant.clazz is by_dotted.clazz is by_parts.clazz is OpenAIChatModelConnection
    assert by_parts.arguments == {"api_key": "k", "timeout": 3.0}
    assert ResourceDescriptor.from_dict(by_parts.to_dict()).arguments == by_parts.arguments
    with pytest.raises(ResourceError, match=r"ResourceName\.ChatModel\.OLLAMA_SETUP .* not implemented"):
        ResourceDescriptor(clazz=ResourceName.ChatModel.OLLAMA_SETUP, model="llama3")
    with pytest.raises(ResourceError, match=r"ResourceName\.VectorStore\.Java\.MILVUS_VECTOR_STORE"):
        ResourceDescriptor(clazz=ResourceName.VectorStore.Java.MILVUS_VECTOR_STORE)
    assert {t.value for t in ResourceType} >= {"skills", "embedding_model", "vector_store", "mcp_server"}
    mcp = ResourceDescriptor(clazz=ResourceName.MCP_SERVER, endpoint="http://127.0.0.1:1/mcp")
    assert mcp.clazz.__name__ == "MCPServer" and mcp.resource_type() is ResourceType.MCP_SERVER


class Remembering(Agent):
    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def remember(event: Event, ctx: RunnerContext) -> None:
        ref = ctx.short_term_memory.new_object("profile").set("name", InputEvent.from_event(event).input)
        seen = ctx.sensory_memory.set("seen", True)
        assert ref == MemoryRef(memory_type=MemoryType.SHORT_TERM, path="profile.name")
        assert seen.memory_type is MemoryType.SENSORY and seen.resolve(ctx) is True
        ctx.action_metric_group.get_counter("remembered").inc()
        ctx.send_event(OutputEvent(output=ref.resolve(ctx)))
        with pytest.raises(MemoryValueError, match="'profile.bad'"):
            ctx.short_term_memory.set("profile.bad", {1, 2})
        ctx.close()


def test_memory_refs_metric_groups_and_memory_errors() -> None:
    assert MemoryType.SENSORY.value == "sensory"  # not upstream's stray tuple
    env = AgentsExecutionEnvironment.get_execution_environment()
    env.config = make_config()
    outputs = env.from_list([{"key": "k", "value": "Ada"}]).apply(Remembering()).to_list()
    env.execute()
    assert outputs == [{"k": "Ada"}]


class Charging(Agent):
    """A durable call that a test interrupts mid-call, then replays."""

    started: ClassVar[asyncio.Event | None] = None
    calls: ClassVar[list[str]] = []

    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    async def charge(event: Event, ctx: RunnerContext) -> None:
        async def call() -> str:
            Charging.calls.append("call")
            assert Charging.started is not None
            Charging.started.set()
            await asyncio.Event().wait()  # hangs: the "worker" dies during the call
            return "charged"

        def reconcile() -> str:
            Charging.calls.append("reconcile")
            return "reconciled"

        result = await ctx.durable_execute_async(call, reconciler=reconcile)
        ctx.send_event(OutputEvent(output=result))


def test_reconciler_answers_for_a_call_that_started_and_never_recorded_a_result() -> None:
    plan = AgentPlan.from_agent(Charging(), make_config())
    Charging.calls.clear()

    async def crash_during_call() -> bytes | None:
        Charging.started = asyncio.Event()
        engine = Engine(plan)
        engine.submit("k", "order", position=7)
        await asyncio.wait_for(Charging.started.wait(), 5)
        [delta] = engine.collect()  # what a checkpoint would commit while the call runs
        await engine.close()
        return delta.state

    state = run_async(crash_during_call())

    async def replay() -> list[Any]:
        engine = Engine(plan, state_loader=lambda key: state)
        engine.submit("k", "order", position=7)
        await asyncio.wait_for(engine.wait_idle(), 5)
        return [output for delta in engine.collect() for _meta, output in delta.outputs]

    assert run_async(replay()) == ["reconciled"]
    assert Charging.calls == ["call", "reconcile"]


def test_durable_call_that_raises_leaves_no_start_behind() -> None:
    class Failing(Agent):
        @action(InputEvent.EVENT_TYPE)
        @staticmethod
        def act(event: Event, ctx: RunnerContext) -> None:
            def boom() -> None:
                raise ValueError("declined")

            with pytest.raises(ValueError):
                ctx.durable_execute(boom, reconciler=lambda: "never")
            ctx.send_event(OutputEvent(output=ctx.durable_execute(lambda: "second", reconciler=lambda: "never")))

    env = AgentsExecutionEnvironment.get_execution_environment()
    env.config = make_config()
    outputs = env.from_list([{"key": "k", "value": 1}]).apply(Failing()).to_list()
    env.execute()
    assert outputs == [{"k": "second"}]


def test_configuration_keys_options_and_flink_config_file(tmp_path: Path) -> None:
    config = make_config()
    config.set(AgentExecutionOptions.MAX_RETRIES, 7)
    config.set_str("short-term-memory.state-ttl.update-type", "on_create_and_write")
    assert config.max_retries == 7 and config.get_int("max-retries") == 7
    assert config.short_term_memory_state_ttl_update_type is ShortTermMemoryTtlUpdate.ON_CREATE_AND_WRITE
    assert config.get(AgentExecutionOptions.SHORT_TERM_MEMORY_STATE_TTL_MS) == 0
    assert config.get_bool("chat.async", True) is True
    path = tmp_path / "config.yaml"
    path.write_text("agent:\n  error-handling-strategy: ignore\n  short-term-memory:\n    state-ttl:\n"
                    "      ms: 60000\n  team: search\n")
    env = AgentsExecutionEnvironment.get_execution_environment()
    loaded = env.get_config(str(path))
    assert loaded.error_handling_strategy.value == "ignore"
    assert loaded.short_term_memory_state_ttl_ms == 60000 and loaded.get_str("team") == "search"
    with pytest.raises(ValueError):
        config.set("short-term-memory.state-ttl.visibility", "SOMETIMES")
    with pytest.raises(AgentPlanError, match="no agent named 'review'"):
        env.from_list([]).apply("review")


class CountingRetries(Agent):
    @chat_model_setup
    @staticmethod
    def model() -> ResourceDescriptor:
        return ResourceDescriptor(clazz=ResourceName.ChatModel.OPENAI_COMPLETIONS_SETUP, connection="llm",
                                  model="stub")

    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def ask(event: Event, ctx: RunnerContext) -> None:
        ctx.send_event(ChatRequestEvent(model="model", messages=[ChatMessage(role=MessageRole.USER, content="hi")]))

    @action(ChatResponseEvent.EVENT_TYPE)
    @staticmethod
    def report(event: Event, ctx: RunnerContext) -> None:
        response = ChatResponseEvent.from_event(event)
        ctx.send_event(OutputEvent(output=[response.retry_count, response.total_retry_wait_sec > 0]))


def test_chat_response_reports_retries_of_its_model_calls(stub_llm: StubLLMServer, make_env: EnvFactory) -> None:
    stub_llm.fail_next(2, "503")
    env = make_env()
    outputs = env.from_list([{"key": "k", "value": "x"}]).apply(CountingRetries()).to_list()
    env.execute()
    assert outputs == [{"k": [2, True]}]


def test_openai_setup_takes_upstreams_strict_and_logprobs_arguments() -> None:
    def lookup(city: str, country: str = "NO") -> str:
        """Look a city up.

        Args:
            city: The city.
            country: Its country code.
        """
        return city

    setup = OpenAIChatModelSetup(connection="openai_connection", strict=True, top_logprobs=0)
    assert "top_logprobs" not in setup.params and "strict" not in setup.params  # neither is a request parameter
    [schema] = setup.tool_schemas([Tool.from_callable(lookup)])
    assert schema["function"]["strict"] is True
    assert schema["function"]["parameters"]["required"] == ["city", "country"]  # strict mode requires all
    assert schema["function"]["parameters"]["additionalProperties"] is False
    assert OpenAIChatModelSetup(connection="c").tool_schemas([Tool.from_callable(lookup)])[0]["function"].get(
        "strict") is None
    assert OpenAIChatModelSetup(connection="c", logprobs=True, top_logprobs=3).params == {
        "logprobs": True, "top_logprobs": 3}
    with pytest.raises(ResourceError, match="strict must be true or false"):
        OpenAIChatModelSetup(connection="c", strict="yes")
