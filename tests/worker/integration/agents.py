"""Agents used by the worker integration tests (importable by worker subprocesses)."""

from __future__ import annotations

import logging
import os

from agentplan import (Agent, ChatMessage, ChatRequestEvent, ChatResponseEvent, InputEvent, MessageRole,
                       OpenAIChatModelConnection, OpenAIChatModelSetup, OutputEvent, ResourceDescriptor,
                       RunnerContext, action, chat_model_connection, chat_model_setup)

# Chaos runs trace which transactions a killed worker had committed: the runtime logs each commit at
# DEBUG, and its worker subprocess imports this module after setting up logging.
if os.environ.get("AGENTFLEET_TEST_TRACE_COMMITS"):
    logging.getLogger("worker.runtime").setLevel(logging.DEBUG)


class CountingAgent(Agent):
    """Per key: ask the model about the input, then count inputs in short-term memory.

    Output: {"key", "seq", "count", "answer"}; ``count`` must equal the number of inputs of
    that key seen so far, which makes lost or repeated state visible.
    """

    @chat_model_connection
    @staticmethod
    def llm() -> ResourceDescriptor:
        return ResourceDescriptor(clazz=OpenAIChatModelConnection, timeout=5.0, max_retries=0)

    @chat_model_setup
    @staticmethod
    def model() -> ResourceDescriptor:
        return ResourceDescriptor(clazz=OpenAIChatModelSetup, connection="llm", model="stub")

    @action(InputEvent)
    @staticmethod
    def ask(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.sensory_memory.set("seq", event.input["seq"])
        ctx.sensory_memory.set("key", event.input["key"])
        text = f"count <{event.input['key']}|{event.input['seq']}>"
        ctx.send_event(ChatRequestEvent(model="model", messages=[ChatMessage(role=MessageRole.USER, content=text)]))

    @action(ChatResponseEvent)
    @staticmethod
    def count(event: ChatResponseEvent, ctx: RunnerContext) -> None:
        count = (ctx.short_term_memory.get("count") or 0) + 1
        ctx.short_term_memory.set("count", count)
        ctx.send_event(OutputEvent(output={"key": ctx.sensory_memory.get("key"), "seq": ctx.sensory_memory.get("seq"),
                                           "count": count, "answer": event.response.content}))


class PoisonAgent(Agent):
    """Raises on inputs marked poison; echoes the rest."""

    @action(InputEvent)
    @staticmethod
    def handle(event: InputEvent, ctx: RunnerContext) -> None:
        if event.input.get("poison"):
            raise ValueError("poison record")
        ctx.send_event(OutputEvent(output=event.input))
