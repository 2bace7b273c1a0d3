"""Chat messages exchanged with models and tools."""

from __future__ import annotations

import enum
import json
from typing import Any

from pydantic import BaseModel, Field, model_validator

from agentplan.fastmodel import trusted


class MessageRole(str, enum.Enum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class ToolCall(BaseModel):
    """One tool invocation requested by a model.

    Also built from, and readable as, Flink Agents 0.3's tool-call dict:
    ``{"id", "type": "function", "function": {"name", "arguments"}, "original_id"}``.
    """

    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    original_id: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_upstream_dict(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("function"), dict):
            function = data["function"]
            arguments = function.get("arguments") or {}
            if isinstance(arguments, str):  # the OpenAI wire form
                arguments = json.loads(arguments) if arguments.strip() else {}
            return {"id": str(data.get("id") or data.get("original_id") or ""), "name": function.get("name"),
                    "arguments": arguments, "original_id": data.get("original_id")}
        return data

    def __getitem__(self, key: str) -> Any:
        """``call["function"]["name"]`` and friends, as 0.3's dicts are read."""
        if key == "function":
            return {"name": self.name, "arguments": self.arguments}
        if key == "type":
            return "function"
        if key in ("id", "name", "arguments", "original_id"):
            return getattr(self, key)
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default


class ChatMessage(BaseModel):
    """A message; ``extra_args`` fill ``{placeholders}`` of the model setup's prompt."""

    role: MessageRole = MessageRole.USER
    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    extra_args: dict[str, Any] = Field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.role.value}: {self.content}"


_ROLE_AND_CONTENT = frozenset({"role", "content"})
_WITH_TOOL_CALLS = frozenset({"role", "content", "tool_calls"})


def trusted_message(role: MessageRole, content: str, tool_calls: list[ToolCall] | None = None) -> ChatMessage:
    """``ChatMessage(role=role, content=content[, tool_calls=...])`` without validation, for messages the
    engine builds from parts that are already valid (a prompt's formatted text, a validated message's
    tool calls): validating one cost ~1.5 us per message. ``tool_calls`` is copied, as validation would."""
    if tool_calls is None:
        return trusted(ChatMessage, {"role": role, "content": content, "tool_calls": [], "extra_args": {}},
                       set(_ROLE_AND_CONTENT))
    return trusted(ChatMessage, {"role": role, "content": content, "tool_calls": list(tool_calls), "extra_args": {}},
                   set(_WITH_TOOL_CALLS))
