"""Agents used by the worker integration tests (importable by worker subprocesses)."""

from __future__ import annotations

import logging
import os
import time

from pydantic import BaseModel, ConfigDict

from agentplan import (
    Agent,
    ApprovalDecisionEvent,
    ApprovalRequestEvent,
    ApprovalTimeoutEvent,
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
    tool,
)

# Chaos runs trace which transactions a killed worker had committed: the runtime logs each commit at
# DEBUG, and its worker subprocess imports this module after setting up logging.
if os.environ.get("AGENTFLEET_TEST_TRACE_COMMITS"):
    logging.getLogger("worker.checkpoint.checkpointer").setLevel(logging.DEBUG)


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


class LoopBlockingAgent(Agent):
    """Echoes its input after ``time.sleep(input["block_s"])`` in a synchronous action: the mistake of a
    blocking call inside an agent, which stops the worker's event loop for that long."""

    @action(InputEvent)
    @staticmethod
    def handle(event: InputEvent, ctx: RunnerContext) -> None:
        time.sleep(float(event.input.get("block_s", 0)))
        ctx.send_event(OutputEvent(output=event.input))


class TypedInput(BaseModel):
    """Input model of the hostile-input matrix: ``n`` must be an int; other fields pass through."""

    model_config = ConfigDict(extra="allow")
    n: int
    poison: bool = False


class TypedEchoAgent(Agent):
    """Echoes a TypedInput; raises on every attempt for inputs marked poison."""

    @action(InputEvent)
    @staticmethod
    def handle(event: InputEvent, ctx: RunnerContext) -> None:
        if event.input.poison:
            raise ValueError(f"poison record n={event.input.n}")
        ctx.send_event(OutputEvent(output=event.input))


class Verdict(BaseModel):
    label: str
    score: float


class FaultProbeAgent(Agent):
    """One model call per input, through the built-in chat action: ``input["prompt"]`` is the user
    message; ``input["structured"]`` asks for a Verdict; the model may call the ``lookup`` tool.

    Output: {"key", "answer", "structured"}. The 1 s client timeout keeps hang faults short.
    """

    @chat_model_connection
    @staticmethod
    def llm() -> ResourceDescriptor:
        return ResourceDescriptor(clazz=OpenAIChatModelConnection, timeout=1.0, max_retries=0)

    @chat_model_setup
    @staticmethod
    def model() -> ResourceDescriptor:
        return ResourceDescriptor(clazz=OpenAIChatModelSetup, connection="llm", model="stub", tools=["lookup"])

    @tool
    @staticmethod
    def lookup(query: str = "") -> str:
        """Look something up.

        Args:
            query: What to look up.
        """
        return f"found {query}"

    @action(InputEvent)
    @staticmethod
    def ask(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.sensory_memory.set("key", event.input["key"])
        ctx.send_event(ChatRequestEvent(model="model",
                                        messages=[ChatMessage(role=MessageRole.USER, content=event.input["prompt"])],
                                        output_schema=Verdict if event.input.get("structured") else None))

    @action(ChatResponseEvent)
    @staticmethod
    def answer(event: ChatResponseEvent, ctx: RunnerContext) -> None:
        structured = event.structured_output
        ctx.send_event(OutputEvent(output={"key": ctx.sensory_memory.get("key"), "answer": event.response.content,
                                           "structured": structured.model_dump() if structured else None}))


class ApprovalAgent(Agent):
    """Input ``{"key", "seq"}`` parks for a decision (``timeout_s`` optional); ``{"plain": true}`` inputs
    pass straight through. Output: ``{"key", "seq", "approved" | "timeout"}`` or ``{"key", "seq", "plain"}``."""

    @action(InputEvent)
    @staticmethod
    def ask(event: InputEvent, ctx: RunnerContext) -> None:
        data = event.input
        if data.get("plain"):
            ctx.send_event(OutputEvent(output={"key": data["key"], "seq": data["seq"], "plain": True}))
            return
        ctx.sensory_memory.set("asked", {"key": data["key"], "seq": data["seq"]})
        ctx.send_event(ApprovalRequestEvent(request={"key": data["key"], "seq": data["seq"]},
                                            timeout_s=data.get("timeout_s")))

    @action(ApprovalDecisionEvent)
    @staticmethod
    def decided(event: ApprovalDecisionEvent, ctx: RunnerContext) -> None:
        ctx.send_event(OutputEvent(output={**ctx.sensory_memory.get("asked"), "approved": event.approved,
                                           "request_id": event.request_id, "by": event.decided_by}))

    @action(ApprovalTimeoutEvent)
    @staticmethod
    def timed_out(event: ApprovalTimeoutEvent, ctx: RunnerContext) -> None:
        ctx.send_event(OutputEvent(output={**ctx.sensory_memory.get("asked"), "timeout": True}))
