"""The chat path's shortcuts give what the validated, eagerly encoded path gave: formatted prompt messages
and response events built without validation, model answers journaled unencoded until a snapshot needs them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from pydantic import BaseModel

from agentplan import (
    Agent,
    AgentPlan,
    ChatMessage,
    ChatRequestEvent,
    ChatResponseEvent,
    Engine,
    Event,
    InputEvent,
    MessageRole,
    OutputEvent,
    Prompt,
    ResourceType,
    RunnerContext,
)
from agentplan.chat_message import ToolCall
from agentplan.chat_models import BaseChatModelConnection, BaseChatModelSetup, ChatResult
from tests.agentplan.support import make_config, run_async


def test_formatted_prompt_messages_equal_validated_ones() -> None:
    call = ToolCall(id="c1", name="lookup", arguments={"sku": "a"})
    template = [ChatMessage(role=MessageRole.SYSTEM, content="Be {tone}. {literal: 1}"),
                ChatMessage(role=MessageRole.ASSISTANT, content="{x}", tool_calls=[call])]
    prompt = Prompt.from_messages(template)
    formatted = prompt.format_messages(tone="brief", x=7)
    expected = [ChatMessage(role=MessageRole.SYSTEM, content="Be brief. {literal: 1}"),
                ChatMessage(role=MessageRole.ASSISTANT, content="7", tool_calls=[call])]
    assert formatted == expected
    assert [m.model_fields_set for m in formatted] == [{"role", "content", "tool_calls"}] * 2
    assert formatted[1].tool_calls is not template[1].tool_calls  # a copy, as validation makes
    formatted[1].tool_calls.clear()
    assert template[1].tool_calls == [call]

    text = Prompt.from_text("Review: {input}").format_messages(MessageRole.SYSTEM, input="great")
    assert text == [ChatMessage(role=MessageRole.SYSTEM, content="Review: great")]
    assert text[0].model_fields_set == {"role", "content"}
    # A role given as its string is still read as the enum member; an unknown one is still refused.
    assert Prompt.from_text("x").format_messages("system")[0].role is MessageRole.SYSTEM  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'boss' is not a valid MessageRole"):
        Prompt.from_text("x").format_messages("boss")  # type: ignore[arg-type]


class Verdict(BaseModel):
    label: str


class ScriptedConnection(BaseChatModelConnection):
    """Answers from a script in process; ``hold`` keeps the numbered call waiting until ``release`` is set."""

    def __init__(self, answers: list[str], hold: int | None = None) -> None:
        self.answers = answers
        self.calls = 0
        self.hold = hold
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    async def chat(self, messages: list[ChatMessage], *, model: str, tools: list[dict[str, Any]] | None = None,
                   **params: Any) -> ChatResult:
        self.calls += 1
        if self.calls == self.hold:
            self.held.set()
            await self.release.wait()
        return ChatResult(message=ChatMessage(role=MessageRole.ASSISTANT, content=self.answers[self.calls - 1]),
                          model=model, prompt_tokens=3)


def ask(event: InputEvent, ctx: RunnerContext) -> None:
    ctx.send_event(ChatRequestEvent(model="setup", messages=[ChatMessage(content=event.input)],
                                    output_schema=Verdict))


def answer(event: ChatResponseEvent, ctx: RunnerContext) -> None:
    ctx.send_event(OutputEvent(output={"event": event.to_record(), "fields_set": sorted(event.model_fields_set),
                                       "revalidated": event == ChatResponseEvent(id=event.id, **{
                                           name: getattr(event, name) for name in event.model_fields_set}),
                                       "types": [type(event.retry_count), type(event.total_retry_wait_sec)]}))


def engine_with(connection: ScriptedConnection, state: dict[str, bytes] | None = None) -> Engine:
    agent = Agent()
    agent.add_resource("setup", ResourceType.CHAT_MODEL, BaseChatModelSetup(connection=connection, model="m"))
    agent.add_action("ask", [InputEvent], ask)
    agent.add_action("answer", [ChatResponseEvent], answer)
    stored = state or {}
    return Engine(AgentPlan.from_agent(agent, make_config(structured_output_retries=2)),
                  state_loader=lambda key: stored.get(str(key)))


def test_a_journaled_answer_is_encoded_when_a_snapshot_takes_it_and_replays_after_a_restart() -> None:
    """The first answer does not parse, so the action calls again: a snapshot during that second call holds
    the first answer in the journal. A restart from it makes only the second call."""
    first_answer, second_answer = "not json", '{"label": "good"}'

    async def main() -> None:
        crashed = ScriptedConnection([first_answer, second_answer], hold=2)
        engine = engine_with(crashed)
        engine.submit("k", "great product", position=0, meta="m0")
        await crashed.held.wait()
        (delta,) = engine.collect()
        await engine.close()
        assert delta.state is not None
        run = json.loads(delta.state)["r"]
        (entry,) = run["j"].values()  # the stored form: the tagged ChatResult
        assert entry["__model__"] == "agentplan.chat_models:ChatResult"
        assert entry["value"]["message"]["content"] == first_answer

        restarted = ScriptedConnection([second_answer])
        engine = engine_with(restarted, {"k": delta.state})
        engine.submit("k", "great product", position=0, meta="m0")
        await engine.wait_idle()
        (delta,) = engine.collect()
        assert restarted.calls == 1  # the journaled first answer was not asked for again
        ((meta, output),) = delta.outputs
        assert meta == "m0"
        record = output["event"]
        assert record["type"] == "agentplan.events:ChatResponseEvent"
        assert record["fields"]["response"]["value"]["content"] == second_answer
        assert record["fields"]["structured_output"] == {"__model__": f"{__name__}:Verdict",
                                                         "value": {"label": "good"}}
        assert record["fields"]["request_id"] == "p0.1"  # the ChatRequestEvent's engine-assigned id
        assert output["fields_set"] == ["request_id", "response", "retry_count", "structured_output",
                                        "total_retry_wait_sec"]
        assert output["revalidated"] is True
        assert output["types"] == [int, float]
        restored = Event.from_record(record)
        assert isinstance(restored, ChatResponseEvent) and restored.structured_output == Verdict(label="good")

    run_async(main())


def test_a_user_durable_result_is_journaled_as_it_was_when_the_call_returned() -> None:
    """Only results nobody changes are kept unencoded: a user's result is encoded at once, so changing it
    afterwards does not change what a replay returns."""
    gate: dict[str, asyncio.Event] = {}

    async def fetch() -> dict[str, list[int]]:
        return {"items": [1]}

    async def act(event: InputEvent, ctx: RunnerContext) -> None:
        result: dict[str, list[int]] = await ctx.durable_execute_async(fetch)
        result["items"].append(2)
        gate["recorded"].set()
        await gate["open"].wait()

    async def main() -> None:
        gate["recorded"], gate["open"] = asyncio.Event(), asyncio.Event()
        agent = Agent()
        agent.add_action("act", [InputEvent], act)
        engine = Engine(AgentPlan.from_agent(agent, make_config()))
        engine.submit("k", "x", position=0)
        await gate["recorded"].wait()
        (delta,) = engine.collect()
        assert delta.state is not None
        assert list(json.loads(delta.state)["r"]["j"].values()) == [{"items": [1]}]
        await engine.close()

    run_async(main())


def test_send_event_still_refuses_what_is_not_an_event() -> None:
    def act(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.send_event(ChatMessage(content="not an event"))  # type: ignore[arg-type]

    async def main() -> None:
        agent = Agent()
        agent.add_action("act", [InputEvent], act)
        engine = Engine(AgentPlan.from_agent(agent, make_config()))
        engine.submit("k", "x", position=0, meta="m0")
        await engine.wait_idle()
        (delta,) = engine.collect()
        ((_meta, _value, error),) = delta.failures
        assert "send_event expects an Event, got ChatMessage" in str(error.__cause__)

    run_async(main())


def test_a_restored_run_resumes_first_when_a_later_input_arrives_before_its_own() -> None:
    """The key's queue is dropped while its run goes on; the input put back in front of the resumed run
    still runs after it."""
    gate: dict[str, asyncio.Event] = {}

    async def act(event: InputEvent, ctx: RunnerContext) -> None:
        if gate.get("hold") is not None:
            gate["held"].set()
            await gate["hold"].wait()
        ctx.send_event(OutputEvent(output=event.input))

    async def main() -> None:
        gate["hold"], gate["held"] = asyncio.Event(), asyncio.Event()
        agent = Agent()
        agent.add_action("act", [InputEvent], act)
        first = Engine(AgentPlan.from_agent(agent, make_config()))
        first.submit("k", "five", position=5, meta="m5")
        await gate["held"].wait()
        (delta,) = first.collect()
        await first.close()
        gate.clear()

        state = delta.state
        second = Engine(AgentPlan.from_agent(agent, make_config()), state_loader=lambda key: state)
        second.submit("k", "six", position=6, meta="m6")
        await second.wait_idle()
        (delta,) = second.collect()
        assert [output for _meta, output in delta.outputs] == ["five", "six"]
        assert delta.finished == [None, "m6"]  # the resumed run's own input never came: no meta

    run_async(main())


class ToolsSeen(BaseChatModelConnection):
    def __init__(self) -> None:
        self.tools: list[Any] = []

    async def chat(self, messages: list[ChatMessage], *, model: str, tools: list[dict[str, Any]] | None = None,
                   **params: Any) -> ChatResult:
        self.tools.append(tools)
        return ChatResult(message=ChatMessage(role=MessageRole.ASSISTANT, content="ok"), model=model)


class OwnToolSetup(BaseChatModelSetup):
    """Sends a tool of its own although it names none."""

    def tool_schemas(self, tools: list[Any]) -> list[dict[str, Any]]:
        return [*super().tool_schemas(tools), {"type": "function", "function": {"name": "own"}}]


def test_a_setup_without_tools_sends_none_and_an_override_of_tool_schemas_still_counts() -> None:
    """Without tools a setup sends none; a setup whose tool_schemas adds its own sends them on every call."""
    async def calls(setup: BaseChatModelSetup, connection: ToolsSeen) -> list[Any]:
        setup.bind(lambda name, kind: None)
        for _ in range(2):
            await setup.chat([ChatMessage(content="hi")])
        return connection.tools

    plain = ToolsSeen()
    assert run_async(calls(BaseChatModelSetup(connection=plain, model="m"), plain)) == [None, None]
    own = ToolsSeen()
    assert run_async(calls(OwnToolSetup(connection=own, model="m"), own)) == \
        [[{"type": "function", "function": {"name": "own"}}]] * 2
