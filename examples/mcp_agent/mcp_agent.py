"""An agent whose chat model uses the tool and the prompt of an MCP server.

The calculator MCP server (``calculator_server.py``) offers the tool ``add`` and the prompt
``ask_sum``; declaring the server with ``@mcp_server`` registers both under those names, so the
chat model setup simply says ``prompt="ask_sum"`` and ``tools=["add"]``. Each input
``{"id", "a", "b", "question"}`` becomes one chat request; the output is ``{"id", "answer"}``.
Set ``CALCULATOR_MCP_URL`` to the server's endpoint (default ``http://127.0.0.1:8765/mcp``).
"""

import os

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
    mcp_server,
)
from agentplan.integrations.mcp import MCPServer


class CalculatorAgent(Agent):
    @mcp_server
    @staticmethod
    def calculator() -> ResourceDescriptor:
        return ResourceDescriptor(clazz=MCPServer,
                                  endpoint=os.environ.get("CALCULATOR_MCP_URL", "http://127.0.0.1:8765/mcp"),
                                  timeout=10)

    @chat_model_connection
    @staticmethod
    def llm() -> ResourceDescriptor:
        return ResourceDescriptor(clazz=OpenAIChatModelConnection, timeout=60.0, max_retries=0)

    @chat_model_setup
    @staticmethod
    def math_model() -> ResourceDescriptor:
        return ResourceDescriptor(clazz=OpenAIChatModelSetup, connection="llm",
                                  model=os.environ.get("OPENAI_MODEL", "qwen3"), prompt="ask_sum", tools=["add"])

    @action(InputEvent)
    @staticmethod
    def ask(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.sensory_memory.set("id", event.input["id"])
        # The prompt's placeholders {a} and {b} come from the message's extra_args.
        question = ChatMessage(role=MessageRole.USER, content=event.input.get("question", ""),
                               extra_args={"a": event.input["a"], "b": event.input["b"]})
        ctx.send_event(ChatRequestEvent(model="math_model", messages=[question]))

    @action(ChatResponseEvent)
    @staticmethod
    def answer(event: ChatResponseEvent, ctx: RunnerContext) -> None:
        ctx.send_event(OutputEvent(output={"id": ctx.sensory_memory.get("id"), "answer": event.response.content}))
