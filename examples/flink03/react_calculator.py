"""A ReAct agent (Flink Agents 0.3.1 style) with two tools and an output schema, its resources added
to the environment with ``add_resource(name, ResourceType, instance)``."""

import os

from pydantic import BaseModel

from agentplan import (
    AgentsExecutionEnvironment,
    ChatMessage,
    MessageRole,
    Prompt,
    ReActAgent,
    ResourceDescriptor,
    ResourceName,
    ResourceType,
    Tool,
)


class CalculationResult(BaseModel):
    result: float
    explanation: str


def add(a: float, b: float) -> float:
    """Calculate the sum of a and b.

    Args:
        a: The first operand.
        b: The second operand.
    """
    return a + b


def multiply(a: float, b: float) -> float:
    """Calculate the product of a and b.

    Args:
        a: The first operand.
        b: The second operand.
    """
    return a * b


calculator_prompt = Prompt.from_messages(
    messages=[
        ChatMessage(
            role=MessageRole.SYSTEM,
            content="Answer the arithmetic question with the add and multiply tools, one step at a time.",
        ),
        ChatMessage(role=MessageRole.USER, content="What is ({a} + {b}) * {c}?"),
    ],
)

openai_connection = ResourceDescriptor(
    clazz=ResourceName.ChatModel.OPENAI_COMPLETIONS_CONNECTION,
    api_base_url=os.environ.get("OPENAI_BASE_URL"),
    api_key=os.environ.get("OPENAI_API_KEY"),
)


def calculator_agent() -> ReActAgent:
    return ReActAgent(
        chat_model=ResourceDescriptor(
            clazz=ResourceName.ChatModel.OPENAI_COMPLETIONS_SETUP,
            connection="openai_connection",
            model=os.environ.get("OPENAI_MODEL", "qwen3:8b"),
            tools=["add", "multiply"],
        ),
        prompt=calculator_prompt,
        output_schema=CalculationResult,
    )


def prepare(env: AgentsExecutionEnvironment) -> AgentsExecutionEnvironment:
    """The environment's shared resources, as a 0.3.1 job declares them."""
    env.add_resource("openai_connection", ResourceType.CHAT_MODEL_CONNECTION, openai_connection)
    env.add_resource("add", ResourceType.TOOL, Tool.from_callable(add))
    env.add_resource("multiply", ResourceType.TOOL, Tool.from_callable(multiply))
    return env
