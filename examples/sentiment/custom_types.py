import os
from typing import List

from pydantic import BaseModel

from agentplan import ChatMessage, MessageRole
from agentplan import Prompt
from agentplan import ResourceDescriptor
from agentplan import (
    OpenAIChatModelConnection,
)

sentiment_analysis_prompt = Prompt.from_messages(
    messages=[
        ChatMessage(
            role=MessageRole.SYSTEM,
            content="""Analyze the sentiment of the given text and classify it as positive, negative, or neutral.
Also provide a confidence score (0-1) and key phrases that support the sentiment.
Your response must be valid JSON in this format:
{
"sentiment": "positive|negative|neutral",
"confidence": 0.95,
"key_phrases": ["phrase1", "phrase2"]
}
""",
        ),
        ChatMessage(
            role=MessageRole.USER,
            content="""Input text: {input}""",
        ),
    ],
)

local_llm_descriptor = ResourceDescriptor(
    clazz=OpenAIChatModelConnection,
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
    key_phrases: List[str]
