"""The RAG + long-term memory agent of the worker tests (importable by worker subprocesses and the kb CLI).

Per input ``{"key", "seq", "question"}``, three embedding calls with texts unique to the input, so the
stub can count each: ``note <key> <seq>: ...`` (memory add), ``ask <key> <seq>: ...`` (retrieval),
``recall <key> <seq>: ...`` (memory search). Output: ``{"key", "seq", "docs": [ids], "notes": [every
note of the key, oldest first]}``.
"""

from __future__ import annotations

import os

from agentplan import (
    Agent,
    ContextRetrievalRequestEvent,
    ContextRetrievalResponseEvent,
    InputEvent,
    OpenAIEmbeddingModelConnection,
    OpenAIEmbeddingModelSetup,
    OutputEvent,
    ResourceDescriptor,
    RunnerContext,
    action,
    embedding_model_connection,
    embedding_model_setup,
    vector_store,
)
from agentplan.integrations.qdrant import QdrantVectorStore

KB_PATH_ENV = "RAG_TEST_QDRANT_PATH"


class RagMemoryAgent(Agent):
    @embedding_model_connection
    @staticmethod
    def embedder() -> ResourceDescriptor:
        return ResourceDescriptor(clazz=OpenAIEmbeddingModelConnection, request_timeout=5.0)

    @embedding_model_setup
    @staticmethod
    def embeddings() -> ResourceDescriptor:
        return ResourceDescriptor(clazz=OpenAIEmbeddingModelSetup, connection="embedder", model="stub-embed")

    @vector_store
    @staticmethod
    def kb() -> ResourceDescriptor:
        return ResourceDescriptor(clazz=QdrantVectorStore, embedding_model="embeddings", collection="faq",
                                  path=os.environ.get(KB_PATH_ENV))

    @action(InputEvent)
    @staticmethod
    async def remember_and_ask(event: InputEvent, ctx: RunnerContext) -> None:
        key, seq, question = event.input["key"], event.input["seq"], event.input["question"]
        ctx.sensory_memory.set("input", event.input)
        notes = ctx.long_term_memory.get_memory_set("notes")
        await ctx.durable_execute_async(notes.add, items=f"note {key} {seq}: {question}")
        ctx.send_event(ContextRetrievalRequestEvent(query=f"ask {key} {seq}: {question}", vector_store="kb",
                                                    max_results=2))

    @action(ContextRetrievalResponseEvent)
    @staticmethod
    async def recall(event: ContextRetrievalResponseEvent, ctx: RunnerContext) -> None:
        data = ctx.sensory_memory.get("input")
        notes = ctx.long_term_memory.get_memory_set("notes")
        await notes.asearch(f"recall {data['key']} {data['seq']}: {data['question']}", limit=2)
        ctx.send_event(OutputEvent(output={"key": data["key"], "seq": data["seq"],
                                           "docs": [d.id for d in event.documents],
                                           "notes": [item.value for item in notes.get()]}))
