"""Events survive to_record -> JSON text -> from_record as equal events of the same type."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

from agentplan import (
    ChatMessage,
    ChatRequestEvent,
    ChatResponseEvent,
    Event,
    InputEvent,
    MessageRole,
    OutputEvent,
    ToolCall,
    ToolRequestEvent,
    ToolResponseEvent,
)
from agentplan.exceptions import SerializationError
from examples.sentiment.custom_types import SentimentAnalysisResult, TextInput


class OrderPlaced(Event):
    order_id: str
    items: list[TextInput]
    note: str | None = None


def through_json(event: Event) -> Event:
    record = json.loads(json.dumps(event.to_record()))
    return Event.from_record(record)


def test_input_event_with_pydantic_input() -> None:
    event = InputEvent(input=TextInput(id="1", text="hello"))
    back = through_json(event)
    assert type(back) is InputEvent
    assert type(back.input) is TextInput
    assert back == event
    assert back.id == event.id


def test_input_event_with_plain_values() -> None:
    for value in ("text", 3, None, {"a": [1, {"b": "c"}]}, ["x", 2.5]):
        event = InputEvent(input=value)
        assert through_json(event) == event


def test_chat_request_event_with_output_schema_class() -> None:
    event = ChatRequestEvent(
        model="sentiment_model",
        messages=[ChatMessage(role=MessageRole.USER, content="hi", extra_args={"input": "x"})],
        output_schema=SentimentAnalysisResult,
    )
    back = through_json(event)
    assert type(back) is ChatRequestEvent
    assert back.output_schema is SentimentAnalysisResult
    assert type(back.messages[0]) is ChatMessage
    assert back == event


def test_chat_request_event_with_json_schema_dict() -> None:
    schema: dict[str, Any] = {"type": "object", "properties": {"a": {"type": "integer"}}}
    event = ChatRequestEvent(model="m", output_schema=schema)
    assert through_json(event).output_schema == schema


def test_chat_response_and_tool_events() -> None:
    response = ChatResponseEvent(
        request_id="r.1",
        response=ChatMessage(role=MessageRole.ASSISTANT, content='{"id": "1"}'),
        structured_output=SentimentAnalysisResult(id="1", sentiment="positive", confidence=0.9, key_phrases=[]),
    )
    back = through_json(response)
    assert type(back.structured_output) is SentimentAnalysisResult
    assert back == response

    request = ToolRequestEvent(model="m", tool_calls=[ToolCall(id="c1", name="lookup", arguments={"sku": "A"})],
                               chat_request_id="r.1")
    back_request = through_json(request)
    assert type(back_request.tool_calls[0]) is ToolCall
    assert back_request == request

    tool_response = ToolResponseEvent(request_id="t.1", responses={"c1": {"rating": 4.5}},
                                      errors={"c2": "ValueError: bad"}, chat_request_id="r.1")
    assert through_json(tool_response) == tool_response


def test_user_event_subclass() -> None:
    event = OrderPlaced(order_id="o1", items=[TextInput(id="a", text="b")])
    back = through_json(event)
    assert type(back) is OrderPlaced
    assert type(back.items[0]) is TextInput
    assert back == event
    out = OutputEvent(output=event.items[0])
    assert through_json(out) == out


def test_from_record_rejects_non_event_types() -> None:
    record = InputEvent(input=1).to_record()
    record["type"] = f"{TextInput.__module__}:TextInput"
    with pytest.raises(SerializationError, match="not an Event"):
        Event.from_record(record)
    record["type"] = "no.such.module:Thing"
    with pytest.raises(SerializationError, match="cannot import"):
        Event.from_record(record)


def test_ids_are_unique_by_default() -> None:
    assert InputEvent(input=1).id != InputEvent(input=1).id


class _NotStorable:
    pass


def test_unstorable_payload_cannot_be_recorded() -> None:
    with pytest.raises(SerializationError, match="not storable"):
        InputEvent(input=_NotStorable()).to_record()


class Shape(BaseModel):
    kind: str


def test_nested_models_in_dicts_keep_their_types() -> None:
    event = InputEvent(input={"shapes": [Shape(kind="circle")], "n": 1})
    back = through_json(event)
    assert type(back.input["shapes"][0]) is Shape
