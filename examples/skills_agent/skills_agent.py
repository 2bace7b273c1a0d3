"""An agent with a skill: the chat model reads the ``math-calculator`` skill and runs its commands.

The setup names the skill and what its ``bash`` tool may run (``allowed_commands``, and scripts in
``allowed_script_dirs``); the model gets the ``load_skill`` and ``bash`` tools and a system message
listing its skills. Each input ``{"id", "question"}`` gives one output ``{"id", "answer"}``.
"""

import os
from pathlib import Path

from agentplan import (
    Agent,
    ChatMessage,
    ChatRequestEvent,
    ChatResponseEvent,
    InputEvent,
    MessageRole,
    OpenAIChatModelConnection,
    OpenAIChatModelSetup,
    OutputEvent,
    ResourceDescriptor,
    RunnerContext,
    action,
    chat_model_connection,
    chat_model_setup,
    skills,
)
from agentplan.skill import Skills

SKILLS_DIR = Path(__file__).parent / "skills"
CALCULATOR_DIR = SKILLS_DIR / "math-calculator"


class SkillsAgent(Agent):
    @skills
    @staticmethod
    def math_skills() -> Skills:
        return Skills.from_local_dir(SKILLS_DIR)

    @chat_model_connection
    @staticmethod
    def llm() -> ResourceDescriptor:
        return ResourceDescriptor(clazz=OpenAIChatModelConnection, timeout=60.0, max_retries=0)

    @chat_model_setup
    @staticmethod
    def math_model() -> ResourceDescriptor:
        return ResourceDescriptor(clazz=OpenAIChatModelSetup, connection="llm",
                                  model=os.environ.get("OPENAI_MODEL", "qwen3"), skills=["math-calculator"],
                                  allowed_commands=["expr"], allowed_script_dirs=[str(CALCULATOR_DIR)])

    @action(InputEvent)
    @staticmethod
    def ask(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.sensory_memory.set("id", event.input["id"])
        ctx.send_event(ChatRequestEvent(model="math_model", messages=[
            ChatMessage(role=MessageRole.SYSTEM, content="You answer arithmetic questions exactly."),
            ChatMessage(role=MessageRole.USER, content=event.input["question"])]))

    @action(ChatResponseEvent)
    @staticmethod
    def answer(event: ChatResponseEvent, ctx: RunnerContext) -> None:
        ctx.send_event(OutputEvent(output={"id": ctx.sensory_memory.get("id"), "answer": event.response.content}))
