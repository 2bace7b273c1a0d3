"""Exact arithmetic with an agent skill (Flink Agents 0.3.1 style): the chat model reads the
``math-calculator`` skill with ``load_skill`` and runs what it says with the ``bash`` tool, limited to
the allowed commands and script directory.

The skill is the one of examples/skills_agent/skills. Input ``{"id", "question"}``; output
``{"id", "answer"}``.
"""

import os
from pathlib import Path

from pydantic import BaseModel

from agentplan import (
    Agent,
    ChatMessage,
    ChatRequestEvent,
    ChatResponseEvent,
    Event,
    InputEvent,
    MessageRole,
    OutputEvent,
    ResourceDescriptor,
    ResourceName,
    RunnerContext,
    Skills,
    action,
    chat_model_connection,
    chat_model_setup,
    skills,
)

SKILLS_DIR = Path(__file__).resolve().parent.parent / "skills_agent" / "skills"
MATH_CALCULATOR_DIR = SKILLS_DIR / "math-calculator"


class MathQuestion(BaseModel):
    id: str
    question: str


class SkillsMathAgent(Agent):
    @skills
    @staticmethod
    def math_skills() -> Skills:
        return Skills.from_local_dir(str(SKILLS_DIR))

    @chat_model_connection
    @staticmethod
    def openai_connection() -> ResourceDescriptor:
        return ResourceDescriptor(
            clazz=ResourceName.ChatModel.OPENAI_COMPLETIONS_CONNECTION,
            api_base_url=os.environ.get("OPENAI_BASE_URL"),
            api_key=os.environ.get("OPENAI_API_KEY"),
            timeout=60.0,
        )

    @chat_model_setup
    @staticmethod
    def math_chat_model() -> ResourceDescriptor:
        return ResourceDescriptor(
            clazz=ResourceName.ChatModel.OPENAI_COMPLETIONS_SETUP,
            connection="openai_connection",
            model=os.environ.get("OPENAI_MODEL", "qwen3:8b"),
            skills=["math-calculator"],
            allowed_commands=["expr", "echo"],
            allowed_script_dirs=[str(MATH_CALCULATOR_DIR)],
        )

    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def process_input(event: Event, ctx: RunnerContext) -> None:
        question = MathQuestion.model_validate(InputEvent.from_event(event).input)
        ctx.short_term_memory.set("id", question.id)
        ctx.send_event(
            ChatRequestEvent(
                model="math_chat_model",
                messages=[
                    ChatMessage(role=MessageRole.SYSTEM, content="You answer arithmetic questions exactly."),
                    ChatMessage(role=MessageRole.USER, content=question.question),
                ],
            )
        )

    @action(ChatResponseEvent.EVENT_TYPE)
    @staticmethod
    def process_chat_response(event: Event, ctx: RunnerContext) -> None:
        response = ChatResponseEvent.from_event(event).response
        ctx.send_event(OutputEvent(output={"id": ctx.short_term_memory.get("id"), "answer": response.content}))
