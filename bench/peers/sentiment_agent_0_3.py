"""The seed's sentiment agent written for the Flink Agents 0.3.1 API (the 0.3.1 peer's agent).

The same workflow as ``examples/sentiment`` (input -> one chat request through the OpenAI chat
model setup with the sentiment prompt -> parse the JSON answer -> the result), in 0.3's terms:
actions listen to event type strings and rebuild typed events with ``from_event``; the input
arrives as a dict (the JSON round trip) and is validated back into ``TextInput``; resource
descriptors name their class by its dotted path; the user message is empty and the text goes in
``prompt_args``, 0.3's idiom for a prompt template. The prompt's text is the example's, read from
its source, so the model gets the very request our worker's agent sends.

Imported by name in the peer, in the JVM's embedded Python and in PyFlink's Python workers
(``bench/peers`` is on their PYTHONPATH); it needs the flink03 peers venv.
"""

from __future__ import annotations

import json
import os

from flink_agents.api.agents.agent import Agent
from flink_agents.api.chat_message import ChatMessage, MessageRole
from flink_agents.api.decorators import action, chat_model_setup, prompt
from flink_agents.api.events.chat_event import ChatRequestEvent, ChatResponseEvent
from flink_agents.api.events.event import Event, InputEvent, OutputEvent
from flink_agents.api.prompts.prompt import Prompt
from flink_agents.api.resource import ResourceDescriptor, ResourceName
from flink_agents.api.runner_context import RunnerContext
from flink_port import example_prompt_messages
from pydantic import BaseModel

_SYSTEM, _USER_TEMPLATE = example_prompt_messages()

sentiment_analysis_prompt = Prompt.from_messages(messages=[
    ChatMessage(role=MessageRole.SYSTEM, content=_SYSTEM),
    ChatMessage(role=MessageRole.USER, content=_USER_TEMPLATE),
])


def llm_connection_descriptor() -> ResourceDescriptor:
    """The OpenAI connection the agent's model setup names ("local_llm"): the seed's settings."""
    return ResourceDescriptor(
        clazz=ResourceName.ChatModel.OPENAI_COMPLETIONS_CONNECTION,
        api_base_url=os.environ.get("OPENAI_BASE_URL", "http://localhost:4000/v1"),
        api_key=os.environ.get("OPENAI_API_KEY", "sk-local"),
        timeout=300.0,
        max_retries=1,
    )


class TextInput(BaseModel):
    id: str
    text: str


class SentimentAnalysisResult(BaseModel):
    id: str
    sentiment: str
    confidence: float
    key_phrases: list[str]


class SentimentAnalysisAgent(Agent):
    @prompt
    @staticmethod
    def sentiment_prompt() -> Prompt:
        return sentiment_analysis_prompt

    @chat_model_setup
    @staticmethod
    def sentiment_model() -> ResourceDescriptor:
        return ResourceDescriptor(
            clazz=ResourceName.ChatModel.OPENAI_COMPLETIONS_SETUP,
            connection="local_llm",
            model=os.environ.get("OPENAI_MODEL", "qwen3-vl"),
            prompt="sentiment_prompt",
        )

    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def process_input(event: Event, ctx: RunnerContext) -> None:
        input_data = TextInput.model_validate(InputEvent.from_event(event).input)
        ctx.short_term_memory.set("id", input_data.id)
        ctx.send_event(ChatRequestEvent(model="sentiment_model", messages=[ChatMessage(role=MessageRole.USER)],
                                        prompt_args={"input": input_data.text}))

    @action(ChatResponseEvent.EVENT_TYPE)
    @staticmethod
    def process_chat_response(event: Event, ctx: RunnerContext) -> None:
        answer = json.loads(ChatResponseEvent.from_event(event).response.content)
        ctx.send_event(OutputEvent(output=SentimentAnalysisResult(
            id=ctx.short_term_memory.get("id"),
            sentiment=answer["sentiment"],
            confidence=answer["confidence"],
            key_phrases=answer["key_phrases"],
        )))
