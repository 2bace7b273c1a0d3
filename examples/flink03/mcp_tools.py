"""Sums through an MCP server (Flink Agents 0.3.1 style): the server's ``ask_sum`` prompt and ``add``
tool, registered under their own names by ``@mcp_server``, are all the chat setup needs.

``$MCP_SERVER_ENDPOINT`` is the calculator server's streamable-HTTP endpoint
(``python -m examples.mcp_agent.calculator_server --port 8000``). Input ``{"id", "a", "b"}``;
output ``{"id", "answer"}``.
"""

import os

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
    action,
    chat_model_connection,
    chat_model_setup,
    mcp_server,
)


class SumRequest(BaseModel):
    id: str
    a: int
    b: int


class McpCalculatorAgent(Agent):
    @mcp_server
    @staticmethod
    def calculator_mcp_server() -> ResourceDescriptor:
        return ResourceDescriptor(
            clazz=ResourceName.MCP_SERVER,
            endpoint=os.environ.get("MCP_SERVER_ENDPOINT", "http://127.0.0.1:8000/mcp"),
            timeout=30,
            sse_read_timeout=300,
        )

    @chat_model_connection
    @staticmethod
    def openai_connection() -> ResourceDescriptor:
        return ResourceDescriptor(
            clazz=ResourceName.ChatModel.OPENAI_COMPLETIONS_CONNECTION,
            api_base_url=os.environ.get("OPENAI_BASE_URL"),
            api_key=os.environ.get("OPENAI_API_KEY"),
        )

    @chat_model_setup
    @staticmethod
    def math_chat_model() -> ResourceDescriptor:
        return ResourceDescriptor(
            clazz=ResourceName.ChatModel.OPENAI_COMPLETIONS_SETUP,
            connection="openai_connection",
            model=os.environ.get("OPENAI_MODEL", "qwen3:8b"),
            prompt="ask_sum",
            tools=["add"],
            strict=True,
        )

    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def process_input(event: Event, ctx: RunnerContext) -> None:
        request = SumRequest.model_validate(InputEvent.from_event(event).input)
        ctx.short_term_memory.set("id", request.id)
        ctx.send_event(
            ChatRequestEvent(
                model="math_chat_model",
                messages=[ChatMessage(role=MessageRole.USER, content="")],
                prompt_args={"a": request.a, "b": request.b},
            )
        )

    @action(ChatResponseEvent.EVENT_TYPE)
    @staticmethod
    def process_chat_response(event: Event, ctx: RunnerContext) -> None:
        response = ChatResponseEvent.from_event(event).response
        ctx.send_event(OutputEvent(output={"id": ctx.short_term_memory.get("id"), "answer": response.content}))
