"""Events: the only way actions talk to each other and to the outside world.

Two styles, one class hierarchy:

* Flink Agents 0.1.1 style (typed): subclass :class:`Event` with pydantic fields, subscribe with
  ``@action(MyEvent)`` and read ``event.my_field``.
* Flink Agents 0.3 style (unified): ``Event(type="my_event", attributes={...})``, subscribe with
  ``@action("my_event")`` and read ``event.get_attr("x")``; a custom subclass sets
  ``EVENT_TYPE: ClassVar[str]`` and calls ``super().__init__(type=..., attributes=...)``.

Every event has a string type (:meth:`Event.get_type`): its ``type`` when set, else its class's
``EVENT_TYPE`` (the built-ins use upstream's values; other classes default to their import path).
"""

from __future__ import annotations

import itertools
import json
import uuid
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentplan import codec
from agentplan.chat_message import ChatMessage, ToolCall
from agentplan.exceptions import SerializationError

_ID_PREFIX = uuid.uuid4().hex[:16]  # unique per process
_ID_COUNTER = itertools.count(1)
#: Fields every event has; the rest are the typed fields of a subclass.
_BASE_FIELDS = frozenset({"id", "type", "attributes"})


def _new_id() -> str:
    """A unique id without a uuid4 per event (an os.urandom call each; the engine replaces most ids
    with deterministic ones anyway, see Event)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


new_event_id = _new_id  # for events built without validation (agentplan.fastmodel)


class Event(BaseModel):
    """Base class of all events. Subclass it (pydantic fields) for your own event types, or use it
    as is with a string ``type`` and ``attributes``.

    The engine replaces ``id`` with a deterministic one when an event is sent inside a run,
    so a replayed run produces the same ids and finds its durable-call results again. (Flink
    Agents 0.3 derives ids from the content and regenerates them on every assignment; ours stay
    stable, which is what its ``from_event`` pattern, ``result.id = event.id``, expects anyway.)
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    #: The string type of this class's events; ``@action(Cls.EVENT_TYPE)`` subscribes to them.
    EVENT_TYPE: ClassVar[str] = "agentplan.events:Event"
    _typed_fields: ClassVar[tuple[str, ...]] = ()  # a subclass's own fields, for to_record

    id: str = Field(default_factory=_new_id)
    #: Set for unified events (``Event(type="my_event", ...)``); None when the class gives the type.
    type: str | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "EVENT_TYPE" not in cls.__dict__:  # a typed event class without its own: its import path
            cls.EVENT_TYPE = codec.import_path(cls)
        cls._typed_fields = tuple(name for name in cls.model_fields if name not in _BASE_FIELDS)

    @field_validator("attributes")
    @classmethod
    def _attributes_storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            codec.check_storable(value, "event attributes")
        except SerializationError as exc:
            raise ValueError(str(exc)) from None
        return value

    # -- the unified-event API (Flink Agents 0.3) ------------------------------------------------
    def get_type(self) -> str:
        return self.type or type(self).EVENT_TYPE

    def get_attr(self, name: str) -> Any:
        """An attribute; for typed events their fields are attributes too. None when absent."""
        if name in type(self).model_fields and name not in _BASE_FIELDS:
            return getattr(self, name)
        return self.attributes.get(name)

    def set_attr(self, name: str, value: Any) -> None:
        if name in type(self).model_fields and name not in _BASE_FIELDS:
            setattr(self, name, value)
            return
        try:
            codec.check_storable(value, f"event attribute {name!r}")
        except SerializationError as exc:
            raise TypeError(str(exc)) from None
        self.attributes[name] = value

    @classmethod
    def from_event(cls, event: Event) -> Event:
        """``event`` as this class: itself when it already is one, else rebuilt from its attributes
        and fields (its id kept)."""
        if isinstance(event, cls):
            return event
        data: dict[str, Any] = {name: getattr(event, name) for name in type(event).model_fields
                                if name not in _BASE_FIELDS}
        data.update(event.attributes)
        return cls._from_parts(event.id, event.type, data)

    @classmethod
    def from_json(cls, json_str: str | bytes) -> Event:
        """An event from its JSON (``model_dump_json``, or upstream's ``{"type", "attributes"}``)."""
        try:
            data = json.loads(json_str)
        except ValueError as exc:
            raise SerializationError(f"event JSON does not parse: {exc}") from exc
        if not isinstance(data, dict) or not data.get("type") and cls is Event:
            raise SerializationError("event JSON needs a non-empty 'type'")
        fields = {k: v for k, v in data.items() if k not in _BASE_FIELDS}
        fields.update(data.get("attributes") or {})
        return cls._from_parts(data.get("id"), data.get("type"), fields)

    @classmethod
    def _from_parts(cls, event_id: str | None, event_type: str | None, data: dict[str, Any]) -> Event:
        """Typed fields from ``data`` go to fields, the rest to attributes (a unified class keeps all)."""
        typed = {name for name in cls.model_fields if name not in _BASE_FIELDS}
        values: dict[str, Any] = {k: v for k, v in data.items() if k in typed}
        if event_id is not None:
            values["id"] = str(event_id)
        if event_type is not None and event_type != cls.EVENT_TYPE:
            values["type"] = event_type
        elif cls is Event or not typed:
            values["type"] = event_type or cls.EVENT_TYPE
        values["attributes"] = {k: v for k, v in data.items() if k not in typed}
        return cls._rebuild(values)

    @classmethod
    def _rebuild(cls, values: dict[str, Any]) -> Event:
        """An instance from its field values. A 0.3-style subclass's own ``__init__`` takes its own
        arguments (``Greeting(name=...)``), which pydantic's validation would call: such classes are
        rebuilt without it, from values that are already typed."""
        if cls.__pydantic_custom_init__:
            return cls.model_construct(**values)
        return cls.model_validate(values)

    # -- persistence (the engine's state and the worker's changelog) ----------------------------------
    def to_record(self) -> dict[str, Any]:
        """Plain JSON data that :meth:`from_record` turns back into an equal event.

        ``type`` and ``attributes`` are written only when set, so typed events' records are what
        they were before unified events existed (state written then stays readable, and vice versa).
        """
        fields: dict[str, Any] = {"id": self.id}
        if self.type is not None:
            fields["type"] = self.type
        if self.attributes:
            fields["attributes"] = codec.encode(self.attributes)
        for name in type(self)._typed_fields:
            fields[name] = codec.encode(getattr(self, name))
        return {"type": codec.import_path(type(self)), "fields": fields}

    @staticmethod
    def from_record(record: dict[str, Any]) -> Event:
        cls = codec.resolve_path(record["type"])
        if not (isinstance(cls, type) and issubclass(cls, Event)):
            raise SerializationError(f"{record['type']!r} is not an Event class")
        fields = {name: codec.decode(value) for name, value in record["fields"].items()}
        return cls._rebuild(fields)


class InputEvent(Event):
    """Carries one input record into the agent."""

    EVENT_TYPE: ClassVar[str] = "_input_event"

    input: Any = None


class OutputEvent(Event):
    """Carries one result out of the agent."""

    EVENT_TYPE: ClassVar[str] = "_output_event"

    output: Any = None


class OutputSchema(BaseModel):
    """Flink Agents 0.3's wrapper of a chat request's output schema (a pydantic class or a JSON schema)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    output_schema: Any


class ChatRequestEvent(Event):
    """Ask the chat model setup named ``model``; answered by a :class:`ChatResponseEvent`.

    ``prompt_args`` fill the setup's prompt placeholders (as do the messages' ``extra_args``);
    ``output_schema`` (a pydantic class, a JSON-schema dict or an :class:`OutputSchema`) asks for
    structured output.
    """

    EVENT_TYPE: ClassVar[str] = "_chat_request_event"

    model: str
    messages: list[ChatMessage] = Field(default_factory=list)
    prompt_args: dict[str, Any] = Field(default_factory=dict)
    output_schema: Any = None


class ChatResponseEvent(Event):
    """The model's final answer to the request with id ``request_id``.

    ``structured_output`` holds the parsed ``output_schema`` instance when one was requested (and
    ``response.extra_args["structured_output"]`` its JSON form, where Flink Agents 0.3 puts it).
    ``retry_count`` / ``total_retry_wait_sec``: model calls retried after transient failures, and
    the time waited for them.
    """

    EVENT_TYPE: ClassVar[str] = "_chat_response_event"

    request_id: str
    response: ChatMessage
    structured_output: Any = None
    retry_count: int = 0
    total_retry_wait_sec: float = 0


class ToolRequestEvent(Event):
    """Tool calls requested by a model while answering a chat request.

    ``tool_calls`` also accepts Flink Agents 0.3's dicts (``{"id", "type": "function", "function":
    {"name", "arguments"}}``), and each :class:`ToolCall` can be read that way (``call["function"]``).
    """

    EVENT_TYPE: ClassVar[str] = "_tool_request_event"

    model: str
    tool_calls: list[ToolCall] = Field(default_factory=list)
    chat_request_id: str | None = None


class ToolResponseEvent(Event):
    """Results (or error messages) of the tool calls of request ``request_id``, by call id."""

    EVENT_TYPE: ClassVar[str] = "_tool_response_event"

    request_id: str
    responses: dict[str, Any] = Field(default_factory=dict)
    errors: dict[str, str] = Field(default_factory=dict)
    external_ids: dict[str, str | None] = Field(default_factory=dict)
    chat_request_id: str | None = None
