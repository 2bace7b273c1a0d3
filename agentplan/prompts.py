"""Prompt templates with ``{name}`` placeholders.

Only ``{identifier}`` placeholders whose name is supplied are replaced; every other brace is
left alone, so prompts may contain literal JSON examples without escaping.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from agentplan.chat_message import ChatMessage, MessageRole

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def fill_placeholders(template: str, values: dict[str, Any]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            return match.group(0)
        value = values[name]
        if isinstance(value, BaseModel):
            return value.model_dump_json()
        return str(value)

    return _PLACEHOLDER.sub(replace, template)


class Prompt(BaseModel):
    """A text or message-list template."""

    text: str | None = None
    messages: list[ChatMessage] | None = None

    @classmethod
    def from_text(cls, text: str) -> Prompt:
        return cls(text=text)

    @classmethod
    def from_messages(cls, messages: list[ChatMessage]) -> Prompt:
        return cls(messages=list(messages))

    def placeholders(self) -> set[str]:
        sources = [self.text] if self.text is not None else [m.content for m in self.messages or []]
        return {name for source in sources if source for name in _PLACEHOLDER.findall(source)}

    def format_string(self, **kwargs: Any) -> str:
        if self.text is not None:
            return fill_placeholders(self.text, kwargs)
        return "\n".join(
            f"{m.role.value}: {fill_placeholders(m.content, kwargs)}" for m in self.messages or []
        )

    def format_messages(self, role: MessageRole = MessageRole.USER, **kwargs: Any) -> list[ChatMessage]:
        if self.text is not None:
            return [ChatMessage(role=role, content=fill_placeholders(self.text, kwargs))]
        return [
            ChatMessage(role=m.role, content=fill_placeholders(m.content, kwargs), tool_calls=m.tool_calls)
            for m in self.messages or []
        ]
