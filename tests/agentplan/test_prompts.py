"""Prompt templates: {name} placeholders filled, every other brace left alone."""

from __future__ import annotations

from pydantic import BaseModel

from agentplan import ChatMessage, MessageRole, Prompt
from agentplan.prompts import fill_placeholders
from examples.sentiment.custom_types import sentiment_analysis_prompt


class Item(BaseModel):
    sku: str
    qty: int


def test_from_text_fills_placeholders() -> None:
    prompt = Prompt.from_text("Classify {input} for {user}.")
    assert prompt.format_string(input="this", user="ann") == "Classify this for ann."
    messages = prompt.format_messages(input="this", user="ann")
    assert len(messages) == 1
    assert messages[0].role is MessageRole.SYSTEM  # Flink Agents' default
    assert messages[0].content == "Classify this for ann."
    user = prompt.format_messages(role=MessageRole.USER, input="x", user="y")
    assert user[0].role is MessageRole.USER


def test_literal_json_braces_are_left_alone() -> None:
    template = 'Reply as {"sentiment": "positive", "n": {"x": [1]}} about {input}; {not a placeholder} {}'
    out = Prompt.from_text(template).format_string(input="cats")
    assert out == 'Reply as {"sentiment": "positive", "n": {"x": [1]}} about cats; {not a placeholder} {}'


def test_unknown_placeholders_stay_and_values_are_not_reformatted() -> None:
    out = Prompt.from_text("{a} {b} {a}").format_string(a="{b}")
    # The value "{b}" is inserted verbatim, and {b} (not supplied) is left as is.
    assert out == "{b} {b} {b}"


def test_non_string_values() -> None:
    assert fill_placeholders("{n}/{f}/{none}", {"n": 3, "f": 0.5, "none": None}) == "3/0.5/None"
    assert fill_placeholders("{item}", {"item": Item(sku="A", qty=2)}) == '{"sku":"A","qty":2}'


def test_from_messages_format_messages_and_format_string() -> None:
    prompt = Prompt.from_messages([
        ChatMessage(role=MessageRole.SYSTEM, content='You answer with {"json": true} about {topic}.'),
        ChatMessage(role=MessageRole.USER, content="Input text: {input}"),
    ])
    assert prompt.placeholders() == {"topic", "input"}
    messages = prompt.format_messages(topic="weather", input="rain")
    assert [(m.role, m.content) for m in messages] == [
        (MessageRole.SYSTEM, 'You answer with {"json": true} about weather.'),
        (MessageRole.USER, "Input text: rain"),
    ]
    assert prompt.format_string(topic="weather", input="rain") == (
        'system: You answer with {"json": true} about weather.\nuser: Input text: rain')
    # the template itself is unchanged
    assert prompt.messages is not None and prompt.messages[1].content == "Input text: {input}"


def test_the_sentiment_prompt_keeps_its_json_example() -> None:
    messages = sentiment_analysis_prompt.format_messages(input="I love it")
    assert messages[1].content == "Input text: I love it"
    system = messages[0].content
    assert '"sentiment": "positive|negative|neutral",' in system
    assert system.count("{") == 1 and system.count("}") == 1
    assert sentiment_analysis_prompt.placeholders() == {"input"}


def test_prompt_json_round_trip() -> None:
    prompt = Prompt.from_messages([ChatMessage(role=MessageRole.SYSTEM, content="{input}")])
    again = Prompt.model_validate_json(prompt.model_dump_json())
    assert again == prompt
    assert again.format_messages(input="x")[0].content == "x"
