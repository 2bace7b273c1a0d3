"""Agents of the retrieval and long-term memory tests (module level: plans serialize functions by path)."""

from __future__ import annotations

from typing import Any, ClassVar

from agentplan import (
    Agent,
    ContextRetrievalRequestEvent,
    ContextRetrievalResponseEvent,
    InputEvent,
    OutputEvent,
    RunnerContext,
    action,
)

EMBEDDER, EMBEDDINGS, STORE = "embedder", "embeddings", "kb"


class RetrievalAgent(Agent):
    """Input: a question; output: the ids of the documents found, best first."""

    @action(InputEvent)
    @staticmethod
    def ask(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.send_event(ContextRetrievalRequestEvent(query=event.input, vector_store=STORE, max_results=2))

    #: Queries whose first answer attempt raises (process-local: memory writes roll back with the failure).
    fail_once: ClassVar[set[str]] = set()

    @action(ContextRetrievalResponseEvent)
    @staticmethod
    def answer(event: ContextRetrievalResponseEvent, ctx: RunnerContext) -> None:
        if event.query in RetrievalAgent.fail_once:
            RetrievalAgent.fail_once.discard(event.query)
            raise RuntimeError("first attempt fails")
        ctx.send_event(OutputEvent(output={"query": event.query, "ids": [d.id for d in event.documents]}))


class MemoryOpsAgent(Agent):
    """Input ``{"op": "add"|"get"|"search"|"delete"|"sets", ...}``; output the operation's result."""

    @action(InputEvent)
    @staticmethod
    async def run(event: InputEvent, ctx: RunnerContext) -> None:
        op: dict[str, Any] = event.input
        memory_set = ctx.long_term_memory.get_memory_set(op.get("set", "notes"))
        result: Any
        if op["op"] == "add":
            result = await ctx.durable_execute_async(memory_set.add, items=op["items"], metadatas=op.get("meta"))
        elif op["op"] == "add_sync":
            result = memory_set.add(op["items"])
        elif op["op"] == "get":
            result = [i.value for i in memory_set.get(ids=op.get("ids"), filters=op.get("filters"),
                                                      limit=op.get("limit", 100))]
        elif op["op"] == "search":
            found = await memory_set.asearch(op["query"], limit=op.get("limit", 2), filters=op.get("filters"))
            result = [(i.value, round(i.score or 0, 3)) for i in found]
        elif op["op"] == "search_sync":
            result = [i.value for i in memory_set.search(op["query"], limit=op.get("limit", 2))]
        elif op["op"] == "delete":
            memory_set.delete(op.get("ids"))
            result = memory_set.size()
        elif op["op"] == "drop":
            result = ctx.long_term_memory.delete_memory_set(op["set"])
        elif op["op"] == "items":
            result = [i.model_dump(mode="json") for i in memory_set.get()]
        else:
            raise ValueError(op)
        if op.get("fail_after"):
            raise RuntimeError("fails after the memory write")
        ctx.send_event(OutputEvent(output=result))
