import json
import logging
import os

from agentplan import Agent
from agentplan import ChatMessage, MessageRole
from agentplan import action, chat_model_setup, prompt
from agentplan import ChatRequestEvent, ChatResponseEvent
from agentplan import InputEvent, OutputEvent
from agentplan import Prompt
from agentplan import ResourceDescriptor
from agentplan import RunnerContext
from agentplan import (
    OpenAIChatModelSetup,
)

from examples.sentiment.custom_types import SentimentAnalysisResult, sentiment_analysis_prompt


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
            model=os.environ.get("OPENAI_MODEL", "qwen3-vl"),
            prompt="sentiment_prompt",
            extract_reasoning=True,
        )

    @action(InputEvent)
    @staticmethod
    def process_input(event: InputEvent, ctx: RunnerContext) -> None:
        # 接收输入,发送给 LLM
        from examples.sentiment.custom_types import TextInput
        input_data: TextInput = event.input
        ctx.short_term_memory.set("id", input_data.id)
        msg = ChatMessage(role=MessageRole.USER, extra_args={"input": input_data.text})
        ctx.send_event(ChatRequestEvent(model="sentiment_model", messages=[msg]))

    @action(ChatResponseEvent)
    @staticmethod
    def process_chat_response(event: ChatResponseEvent, ctx: RunnerContext) -> None:
        # 解析 LLM 响应,输出结果
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
