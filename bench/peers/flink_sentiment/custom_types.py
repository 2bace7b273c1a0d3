"""The seed's custom_types.py: data models, the sentiment prompt and the LLM connection.

Unchanged in logic; the connection reads its endpoint and key from OPENAI_BASE_URL /
OPENAI_API_KEY (set by flink_agents_peer.py to the benchmark's stub) instead of the
seed's hard-coded local LiteLLM address, and the prompt text comes from peer_common so
the three peers send the very same request.
"""

import os
from typing import List

from pydantic import BaseModel

from flink_agents.api.chat_message import ChatMessage, MessageRole
from flink_agents.api.prompts.prompt import Prompt
from flink_agents.api.resource import ResourceDescriptor
from flink_agents.integrations.chat_models.openai.openai_chat_model import (
    OpenAIChatModelConnection,
)

from peer_common import LLM_MAX_RETRIES, LLM_TIMEOUT_S, SENTIMENT_SYSTEM_PROMPT, SENTIMENT_USER_TEMPLATE

sentiment_analysis_prompt = Prompt.from_messages(
    messages=[
        ChatMessage(
            role=MessageRole.SYSTEM,
            content=SENTIMENT_SYSTEM_PROMPT,
        ),
        ChatMessage(
            role=MessageRole.USER,
            content=SENTIMENT_USER_TEMPLATE,
        ),
    ],
)

local_llm_descriptor = ResourceDescriptor(
    clazz=OpenAIChatModelConnection,
    api_base_url=os.environ["OPENAI_BASE_URL"],
    api_key=os.environ["OPENAI_API_KEY"],
    timeout=LLM_TIMEOUT_S,
    max_retries=LLM_MAX_RETRIES,
)


class TextInput(BaseModel):
    id: str
    text: str


class SentimentAnalysisResult(BaseModel):
    id: str
    sentiment: str
    confidence: float
    key_phrases: List[str]
