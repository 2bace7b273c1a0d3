"""Chat messages exchanged with models and tools."""

from __future__ import annotations

import enum
from typing import Any

from pydantic import BaseModel, Field


class MessageRole(str, enum.Enum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class ToolCall(BaseModel):
    """One tool invocation requested by a model."""

    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ChatMessage(BaseModel):
    """A message; ``extra_args`` fill ``{placeholders}`` of the model setup's prompt."""

    role: MessageRole = MessageRole.USER
    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    extra_args: dict[str, Any] = Field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.role.value}: {self.content}"
