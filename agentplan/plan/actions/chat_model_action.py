"""The built-in chat action: a chat request as a small state machine kept in the run's sensory memory,
advanced one step per action so every step is checkpointed: model call -> (tool request -> tool
response -> model call)* -> response. Model calls are durable calls.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from pydantic import BaseModel, ValidationError

from agentplan.chat_message import ChatMessage, MessageRole
from agentplan.chat_models import BaseChatModelSetup, ChatResult, schema_instruction
from agentplan.events import (
    ChatRequestEvent,
    ChatResponseEvent,
    OutputSchema,
    ToolRequestEvent,
    ToolResponseEvent,
    new_event_id,
)
from agentplan.exceptions import ChatModelError, ResourceError, ToolCallLimitExceeded, TransientError
from agentplan.fallback import Candidate, candidates, is_available, pick
from agentplan.fastmodel import trusted
from agentplan.resources import ResourceType
from agentplan.runner_context import RunnerContext
from agentplan.runtime.durable import UNCHANGED_RESULT
from agentplan.runtime.observe import label_call

logger = logging.getLogger(__name__)

CHAT_ACTION = "chat_model_action"
_CONVERSATIONS = "__chat__"
_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def parse_structured(content: str, schema: Any) -> Any:
    """Parse model output into ``schema`` (a pydantic class or a JSON-schema dict)."""
    text = content.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema.model_validate_json(text)
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")  # noqa: TRY004 - callers treat ValueError as "does not parse"
    return value


async def _call_model(ctx: RunnerContext, setup_name: str, messages: list[ChatMessage],
                      setup: Any = None) -> ChatResult:
    """One durable model call: one request. A transient failure propagates to the engine, the one
    retry layer, which runs the action again; a replay finds the single recorded result. ``setup``: the
    setup named ``setup_name`` when the caller has looked it up already."""
    if setup is None:
        setup = ctx.get_resource(setup_name, ResourceType.CHAT_MODEL)
    alone = _ALONE.get(setup_name)
    if alone is not None and alone[0] is setup and not setup.fallback:
        options = alone[1]  # a setup without fallbacks: its one candidate, built once
    else:
        options = _candidates(ctx, setup_name, setup)
    label_call(ctx, "chat", setup.model or setup_name, setup=setup)  # the requested model; a fallback is journaled
    return await ctx.durable_execute_async(_ModelCall(ctx.metrics, setup_name, setup, options, messages).run)


def _candidates(ctx: RunnerContext, setup_name: str, setup: Any) -> list[Candidate]:
    """The setup and its fallbacks. (Its own function: the lookup lambda's cell for ``ctx`` would otherwise be
    made by every _call_model and live, a GC-tracked container, until the model answers.)"""
    if not isinstance(setup, BaseChatModelSetup):
        raise ResourceError(f"{setup_name!r} is not a chat model setup")
    options = candidates(setup_name, setup, lambda name: ctx.get_resource(name, ResourceType.CHAT_MODEL))
    if len(options) == 1:
        _ALONE[setup_name] = (setup, options)
    return options


class _ModelCall:
    """The durable function of one model call (a bound method: no closure, cells and attribute dict per call)."""

    __slots__ = ("metrics", "setup_name", "setup", "options", "messages")

    def __init__(self, metrics: Any, setup_name: str, setup: BaseChatModelSetup, options: list[Candidate],
                 messages: list[ChatMessage]) -> None:
        self.metrics, self.setup_name, self.setup, self.options, self.messages = \
            metrics, setup_name, setup, options, messages

    async def run(self) -> ChatResult:
        # The setup is chosen per attempt; the journaled answer names the fallback that gave it.
        options, metrics = self.options, self.metrics
        tried: set[str] = set() if len(options) > 1 else _NONE_TRIED  # no set per call for a setup alone
        chosen = options[0] if len(options) == 1 else pick(options, tried)
        while True:
            assert chosen is not None
            used = chosen.setup
            model_label = used.model or chosen.name
            started = time.monotonic()
            try:
                result = await used.chat(self.messages)
            except Exception as exc:
                metrics.llm_request(model_label, time.monotonic() - started, exc)
                if len(options) == 1 or not isinstance(exc, TransientError) or is_available(used):
                    raise  # the engine retries (an endpoint that stays available is not "down")
                tried.add(chosen.name)
                chosen = pick(options, tried)
                if chosen is None:
                    raise
                continue
            metrics.llm_request(model_label, time.monotonic() - started, None,
                                result.prompt_tokens, result.completion_tokens)
            if used is not self.setup:
                metrics.llm_fallback(self.setup_name, chosen.name)
                result = result.model_copy(update={"fallback": chosen.name})
            return result

    # The result is only read (answers are copied, never changed): journaled unencoded (agentplan.runtime.durable).
    setattr(run, UNCHANGED_RESULT, True)  # noqa: B010 - the marker's name is a constant shared with the engine


_NONE_TRIED: set[str] = set()  # never added to: a setup alone re-raises instead of trying another
# By setup name: a setup without fallbacks and its candidate list (checked by identity: plans may reuse names).
_ALONE: dict[str, tuple[BaseChatModelSetup, list[Candidate]]] = {}


def _conversation_path(request_id: str) -> str:
    return f"{_CONVERSATIONS}.{request_id.replace('.', '_')}"


async def chat_model_action(event: ChatRequestEvent | ToolResponseEvent, ctx: RunnerContext) -> None:
    """Advance a chat request: call the model, ask for tools, or answer."""
    setup = None
    if isinstance(event, ChatRequestEvent):
        setup = ctx.get_resource(event.model, ResourceType.CHAT_MODEL)
        messages = setup.prepare_messages(event.messages, event.prompt_args)
        schema = event.output_schema
        if schema is not None and isinstance(schema, OutputSchema):
            schema = schema.output_schema
        if schema is not None:
            # Many chat templates accept a system message only in first place: merge into it.
            instruction = schema_instruction(schema)
            if instruction in messages:
                pass  # placed by the sender (ReActAgent puts it where Flink Agents' does)
            elif messages and messages[0].role is MessageRole.SYSTEM:
                first = messages[0]
                messages[0] = first.model_copy(update={"content": f"{first.content}\n\n{instruction.content}"})
            else:
                messages.insert(0, instruction)
        state: dict[str, Any] = {"request_id": event.id, "model": event.model, "rounds": 0, "repairs": 0,
                                 "schema": schema, "messages": messages}
    else:
        if event.chat_request_id is None:
            return  # a tool response that no chat request waits for (user-sent)
        stored = ctx.sensory_memory.get(_conversation_path(event.chat_request_id))
        if stored is None:
            raise ChatModelError(f"no chat request {event.chat_request_id!r} waits for tool results")
        state = dict(stored)
        state["messages"] = [m if isinstance(m, ChatMessage) else ChatMessage.model_validate(m)
                             for m in state["messages"]]
        for call_id, result in event.responses.items():
            content = result if isinstance(result, str) else json.dumps(result, default=str)
            state["messages"].append(ChatMessage(role=MessageRole.TOOL, content=content,
                                                 extra_args={"tool_call_id": call_id}))
        for call_id, error in event.errors.items():
            state["messages"].append(ChatMessage(role=MessageRole.TOOL, content=f"error: {error}",
                                                 extra_args={"tool_call_id": call_id}))
        state["rounds"] += 1

    # Retries of the model calls, over every step of the request (each step is its own action).
    state["retry_count"] = state.get("retry_count", 0) + getattr(ctx, "retry_count", 0)
    state["retry_wait_s"] = state.get("retry_wait_s", 0.0) + getattr(ctx, "retry_wait_s", 0.0)
    while True:
        result = await _call_model(ctx, state["model"], state["messages"], setup)
        answer = result.message
        if answer.tool_calls:
            if state["rounds"] >= ctx.config.max_tool_call_rounds:
                raise ToolCallLimitExceeded(
                    f"model {state['model']!r} still calls tools after {state['rounds']} rounds "
                    f"(max_tool_call_rounds={ctx.config.max_tool_call_rounds})")
            state["messages"].append(answer)
            ctx.sensory_memory.set(_conversation_path(state["request_id"]), state)
            ctx.send_event(ToolRequestEvent(model=state["model"], tool_calls=answer.tool_calls,
                                            chat_request_id=state["request_id"]))
            return
        structured = None
        if state["schema"] is not None:
            try:
                structured = parse_structured(answer.content, state["schema"])
            except (ValidationError, ValueError) as exc:
                if state["repairs"] >= ctx.config.structured_output_retries:
                    raise ChatModelError(f"model output does not match the output schema: {exc}") from exc
                state["repairs"] += 1
                state["messages"] = state["messages"] + [
                    answer, ChatMessage(role=MessageRole.USER,
                                        content=f"That reply was not valid for the schema ({exc}). "
                                                "Reply again with only the JSON object.")]
                continue
        if not isinstance(event, ChatRequestEvent):  # only a request that asked for tools stored its state
            ctx.sensory_memory.delete(_conversation_path(state["request_id"]))
        if structured is not None:
            # Where Flink Agents 0.3 delivers it, in the JSON form its actions receive.
            as_json = structured.model_dump(mode="json") if isinstance(structured, BaseModel) else structured
            answer = answer.model_copy(update={"extra_args": {**answer.extra_args, "structured_output": as_json}})
        ctx.send_event(_response_event(state, answer, structured))
        return


_RESPONSE_FIELDS = frozenset({"request_id", "response", "structured_output", "retry_count", "total_retry_wait_sec"})


def _response_event(state: dict[str, Any], answer: ChatMessage, structured: Any) -> ChatResponseEvent:
    """The request's ChatResponseEvent, built without validation from parts that are valid already: the
    answer is a validated ChatResult's message (fresh or from the journal), the request id an event id."""
    return trusted(ChatResponseEvent, {
        "id": new_event_id(), "type": None, "attributes": {}, "request_id": str(state["request_id"]),
        "response": answer, "structured_output": structured, "retry_count": int(state["retry_count"]),
        "total_retry_wait_sec": float(state["retry_wait_s"])}, set(_RESPONSE_FIELDS))
