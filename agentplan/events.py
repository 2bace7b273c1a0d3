"""Events: the only way actions talk to each other and to the outside world."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentplan import codec
from agentplan.chat_message import ChatMessage, ToolCall
from agentplan.exceptions import SerializationError

_ID_PREFIX = uuid.uuid4().hex[:16]  # unique per process
_ID_COUNTER = itertools.count(1)


def _new_id() -> str:
    """A unique id without a uuid4 per event (an os.urandom call each; the engine replaces most ids
    with deterministic ones anyway, see Event)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


class Event(BaseModel):
    """Base class of all events. Subclass it (pydantic fields) for your own event types.

    The engine replaces ``id`` with a deterministic one when an event is sent inside a run,
    so a replayed run produces the same ids and finds its durable-call results again.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    id: str = Field(default_factory=_new_id)

    def to_record(self) -> dict[str, Any]:
        """Plain JSON data that :meth:`from_record` turns back into an equal event."""
        fields = {name: codec.encode(getattr(self, name)) for name in type(self).model_fields}
        return {"type": codec.import_path(type(self)), "fields": fields}

    @staticmethod
    def from_record(record: dict[str, Any]) -> Event:
        cls = codec.resolve_path(record["type"])
        if not (isinstance(cls, type) and issubclass(cls, Event)):
            raise SerializationError(f"{record['type']!r} is not an Event class")
        fields = {name: codec.decode(value) for name, value in record["fields"].items()}
        return cls.model_validate(fields)


class InputEvent(Event):
    """Carries one input record into the agent."""

    input: Any = None


class OutputEvent(Event):
    """Carries one result out of the agent."""

    output: Any = None


class ChatRequestEvent(Event):
    """Ask the chat model setup named ``model``; answered by a :class:`ChatResponseEvent`."""

    model: str
    messages: list[ChatMessage] = Field(default_factory=list)
    output_schema: Any = None


class ChatResponseEvent(Event):
    """The model's final answer to the request with id ``request_id``.

    ``structured_output`` holds the parsed ``output_schema`` instance when one was requested.
    """

    request_id: str
    response: ChatMessage
    structured_output: Any = None


class ToolRequestEvent(Event):
    """Tool calls requested by a model while answering a chat request."""

    model: str
    tool_calls: list[ToolCall] = Field(default_factory=list)
    chat_request_id: str | None = None


class ToolResponseEvent(Event):
    """Results (or error messages) of the tool calls of request ``request_id``, by call id."""

    request_id: str
    responses: dict[str, Any] = Field(default_factory=dict)
    errors: dict[str, str] = Field(default_factory=dict)
    chat_request_id: str | None = None
