"""A ReAct agent for the prompt-roles test on the worker (importable by worker subprocesses): its
setup has a text prompt, its own prompt has a system and a user message, and it has an output schema."""

from __future__ import annotations

from pydantic import BaseModel

from agentplan import (
    ChatMessage,
    MessageRole,
    OpenAIChatModelConnection,
    OpenAIChatModelSetup,
    Prompt,
    ReActAgent,
    ResourceDescriptor,
    ResourceType,
)


class Verdict(BaseModel):
    label: str
    score: float


JUDGE_PROMPT = Prompt.from_messages([
    ChatMessage(role=MessageRole.SYSTEM, content="You judge reviews of {product}."),
    ChatMessage(role=MessageRole.USER, content="Review: {text}"),
])
HOUSE_RULES = "Be terse."


class ReviewJudgeAgent(ReActAgent):
    def __init__(self) -> None:
        super().__init__(chat_model=ResourceDescriptor(clazz=OpenAIChatModelSetup, connection="llm", model="stub",
                                                       prompt="house_rules"),
                         prompt=JUDGE_PROMPT, output_schema=Verdict)
        self.add_resource("llm", ResourceType.CHAT_MODEL_CONNECTION,
                          ResourceDescriptor(clazz=OpenAIChatModelConnection, timeout=5.0))
        self.add_resource("house_rules", ResourceType.PROMPT, Prompt.from_text(HOUSE_RULES))
