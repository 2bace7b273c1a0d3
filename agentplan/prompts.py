"""Prompt templates with ``{name}`` placeholders.

Only ``{identifier}`` placeholders whose name is supplied are replaced; every other brace is
left alone, so prompts may contain literal JSON examples without escaping.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from pydantic import BaseModel

from agentplan.chat_message import ChatMessage, MessageRole, trusted_message

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@functools.lru_cache(maxsize=1024)
def _template_parts(template: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``template`` split once into literal text and the placeholder names between it."""
    pieces = _PLACEHOLDER.split(template)  # literal, name, literal, name, ..., literal
    return tuple(pieces[0::2]), tuple(pieces[1::2])


def fill_placeholders(template: str, values: dict[str, Any]) -> str:
    # Templates are few and long (system prompts), and filled once per request: scan each once.
    literals, names = _template_parts(template)
    if not names:
        return template
    out = [literals[0]]
    for name, literal in zip(names, literals[1:]):
        if name in values:
            value = values[name]
            out.append(value if type(value) is str else
                       value.model_dump_json() if isinstance(value, BaseModel) else str(value))
        else:
            out.append("{" + name + "}")
        out.append(literal)
    return "".join(out)


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

    def format_messages(self, role: MessageRole = MessageRole.SYSTEM, **kwargs: Any) -> list[ChatMessage]:
        """The filled template as messages: a text prompt becomes one message of ``role`` (SYSTEM by
        default, as in Flink Agents, so a chat model setup's text prompt is its system prompt); a
        message prompt keeps each message's own role and ignores ``role``."""
        if self.text is not None:
            return [trusted_message(MessageRole(role), fill_placeholders(self.text, kwargs))]
        # Built from the prompt's validated messages and formatted text: no validation per request.
        return [trusted_message(m.role, fill_placeholders(m.content, kwargs), m.tool_calls)
                for m in self.messages or []]
