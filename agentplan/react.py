"""ReActAgent: prompt -> model with tools (think, act, observe) -> structured output."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from agentplan.agent import Agent
from agentplan.chat_message import ChatMessage, MessageRole
from agentplan.events import ChatRequestEvent, ChatResponseEvent, InputEvent, OutputEvent
from agentplan.exceptions import PlanCompileError
from agentplan.prompts import Prompt
from agentplan.resources import ResourceDescriptor, ResourceType
from agentplan.runner_context import RunnerContext

REACT_MODEL = "react_chat_model"
REACT_PROMPT = "react_prompt"


def _input_variables(value: Any) -> dict[str, Any]:
    if isinstance(value, BaseModel):
        fields = value.model_dump(mode="json")
        return {"input": value.model_dump_json(), **fields}
    if isinstance(value, dict):
        import json

        return {"input": json.dumps(value, ensure_ascii=False, default=str), **value}
    return {"input": str(value)}


def react_start(event: InputEvent, ctx: RunnerContext) -> None:
    schema = ctx.get_action_config_value("output_schema")
    variables = _input_variables(event.input)
    has_prompt = bool(ctx.get_action_config_value("has_prompt"))
    message = ChatMessage(role=MessageRole.USER, content="" if has_prompt else variables["input"],
                          extra_args=variables)
    ctx.send_event(ChatRequestEvent(model=REACT_MODEL, messages=[message], output_schema=schema))


def react_finish(event: ChatResponseEvent, ctx: RunnerContext) -> None:
    output = event.structured_output if event.structured_output is not None else event.response.content
    ctx.send_event(OutputEvent(output=output))


class ReActAgent(Agent):
    """A ready-made agent: each input is formatted into ``prompt`` (placeholders ``{input}`` and the
    input's fields) and sent to ``chat_model``, whose setup lists the tools it may call; the answer
    (parsed into ``output_schema`` when given) is the output."""

    def __init__(self, chat_model: ResourceDescriptor, prompt: Prompt | None = None,
                 output_schema: type[BaseModel] | dict[str, Any] | None = None) -> None:
        super().__init__()
        if not isinstance(chat_model, ResourceDescriptor):
            raise PlanCompileError("ReActAgent(chat_model=...) expects a ResourceDescriptor of a chat model setup")
        if prompt is not None:
            if "prompt" in chat_model.arguments:
                raise PlanCompileError("give the prompt either to ReActAgent or to the chat model setup, not both")
            chat_model = ResourceDescriptor(chat_model.clazz_path if isinstance(chat_model._clazz, str)
                                            else chat_model.clazz,
                                            arguments={**chat_model.arguments, "prompt": REACT_PROMPT})
            self.add_resource(REACT_PROMPT, ResourceType.PROMPT, prompt)
        self.add_resource(REACT_MODEL, ResourceType.CHAT_MODEL, chat_model)
        has_prompt = prompt is not None or chat_model.arguments.get("prompt") is not None
        self.add_action("react_start", [InputEvent], react_start, output_schema=output_schema,
                        has_prompt=has_prompt)
        self.add_action("react_finish", [ChatResponseEvent], react_finish)
