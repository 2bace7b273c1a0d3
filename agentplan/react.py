"""ReActAgent: prompt -> model with tools (think, act, observe) -> structured output.

The request's messages are built as Flink Agents' ReAct agent builds them: the agent's prompt is
formatted here with the USER role (a chat model setup's own prompt, if any, still goes first, as the
setup's system prompt), and the output-schema instruction is a system message placed right after the
first system message (first when there is none).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from agentplan.agent import Agent
from agentplan.chat_message import ChatMessage, MessageRole
from agentplan.chat_models import schema_instruction
from agentplan.events import ChatRequestEvent, ChatResponseEvent, InputEvent, OutputEvent
from agentplan.exceptions import PlanCompileError
from agentplan.prompts import Prompt
from agentplan.resources import ResourceDescriptor, ResourceType
from agentplan.runner_context import RunnerContext

REACT_MODEL = "react_chat_model"
REACT_PROMPT = "react_prompt"

_PRIMITIVE = (bool, str, int, float, type(None))


def _as_json(value: Any) -> str:
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return json.dumps(value, ensure_ascii=False, default=str)


def _input_variables(value: Any) -> dict[str, str]:
    """The placeholders an input fills: ``{input}`` (the text of a primitive, else the input as JSON)
    and, for a dict or an object, each field as ``str(value)`` (what Flink Agents passes)."""
    if isinstance(value, _PRIMITIVE):
        return {"input": str(value)}
    fields = value if isinstance(value, dict) else getattr(value, "__dict__", {})
    return {"input": _as_json(value), **{str(k): str(v) for k, v in fields.items()}}


def _insert_after_first_system(messages: list[ChatMessage], message: ChatMessage) -> list[ChatMessage]:
    at = next((i + 1 for i, m in enumerate(messages) if m.role is MessageRole.SYSTEM), 0)
    return [*messages[:at], message, *messages[at:]]


def react_messages(variables: dict[str, str], prompt: Prompt | None,
                   schema: type[BaseModel] | dict[str, Any] | None) -> list[ChatMessage]:
    """The messages of the chat request for an input's ``variables``."""
    if prompt is not None:
        messages = prompt.format_messages(role=MessageRole.USER, **variables)
    else:  # upstream requires a prompt for a structured input; here it is sent as JSON
        messages = [ChatMessage(role=MessageRole.USER, content=variables["input"])]
    if schema is not None:
        messages = _insert_after_first_system(messages, schema_instruction(schema))
    return messages


def react_start(event: InputEvent, ctx: RunnerContext) -> None:
    schema = ctx.get_action_config_value("output_schema")
    prompt = ctx.get_resource(REACT_PROMPT, ResourceType.PROMPT) if ctx.get_action_config_value("has_prompt") else None
    variables = _input_variables(event.input)
    # prompt_args: the same variables fill the placeholders of a prompt given to the chat model setup.
    ctx.send_event(ChatRequestEvent(model=REACT_MODEL, messages=react_messages(variables, prompt, schema),
                                    prompt_args=variables, output_schema=schema))


def react_finish(event: ChatResponseEvent, ctx: RunnerContext) -> None:
    output = event.structured_output if event.structured_output is not None else event.response.content
    ctx.send_event(OutputEvent(output=output))


class ReActAgent(Agent):
    """A ready-made agent: each input is formatted into ``prompt`` (placeholders ``{input}`` and the
    input's fields) as user messages and sent to ``chat_model``, whose setup lists the tools it may
    call (and may have a prompt of its own, sent first); the answer (parsed into ``output_schema``
    when given) is the output."""

    def __init__(self, chat_model: ResourceDescriptor, prompt: Prompt | None = None,
                 output_schema: type[BaseModel] | dict[str, Any] | None = None) -> None:
        super().__init__()
        if not isinstance(chat_model, ResourceDescriptor):
            raise PlanCompileError("ReActAgent(chat_model=...) expects a ResourceDescriptor of a chat model setup")
        if prompt is not None:
            self.add_resource(REACT_PROMPT, ResourceType.PROMPT, prompt)
        self.add_resource(REACT_MODEL, ResourceType.CHAT_MODEL, chat_model)
        self.add_action("react_start", [InputEvent], react_start, output_schema=output_schema,
                        has_prompt=prompt is not None)
        self.add_action("react_finish", [ChatResponseEvent], react_finish)
