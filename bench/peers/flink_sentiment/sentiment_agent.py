"""The seed's Workflow Agent (sentiment_agent.py), unchanged in logic.

Only the model name is read from OPENAI_MODEL (the seed hard-codes its local "qwen3-vl").
"""

import json
import logging
import os

from flink_agents.api.agent import Agent
from flink_agents.api.chat_message import ChatMessage, MessageRole
from flink_agents.api.decorators import action, chat_model_setup, prompt
from flink_agents.api.events.chat_event import ChatRequestEvent, ChatResponseEvent
from flink_agents.api.events.event import InputEvent, OutputEvent
from flink_agents.api.prompts.prompt import Prompt
from flink_agents.api.resource import ResourceDescriptor
from flink_agents.api.runner_context import RunnerContext
from flink_agents.integrations.chat_models.openai.openai_chat_model import (
    OpenAIChatModelSetup,
)

from custom_types import SentimentAnalysisResult, sentiment_analysis_prompt


class SentimentAnalysisAgent(Agent):
    @prompt
    @staticmethod
    def sentiment_prompt() -> Prompt:
        return sentiment_analysis_prompt

    @chat_model_setup
    @staticmethod
    def sentiment_model() -> ResourceDescriptor:
        return ResourceDescriptor(
            clazz=OpenAIChatModelSetup,
            connection="local_llm",
            model=os.environ["OPENAI_MODEL"],
            prompt="sentiment_prompt",
            extract_reasoning=True,
        )

    @action(InputEvent)
    @staticmethod
    def process_input(event: InputEvent, ctx: RunnerContext) -> None:
        # Receive the input, remember its id, ask the LLM.
        from custom_types import TextInput

        input_data: TextInput = event.input
        ctx.short_term_memory.set("id", input_data.id)
        msg = ChatMessage(role=MessageRole.USER, extra_args={"input": input_data.text})
        ctx.send_event(ChatRequestEvent(model="sentiment_model", messages=[msg]))

    @action(ChatResponseEvent)
    @staticmethod
    def process_chat_response(event: ChatResponseEvent, ctx: RunnerContext) -> None:
        # Parse the LLM's JSON answer and emit the result.
        try:
            json_content = json.loads(event.response.content)
            ctx.send_event(
                OutputEvent(
                    output=SentimentAnalysisResult(
                        id=ctx.short_term_memory.get("id"),
                        sentiment=json_content["sentiment"],
                        confidence=json_content["confidence"],
                        key_phrases=json_content["key_phrases"],
                    )
                )
            )
        except Exception as e:
            logging.exception(f"Error processing chat response: {e}")
            raise
