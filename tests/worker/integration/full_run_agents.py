"""The agent of the full-run recovery test: every kind of durable call in one run (importable by workers).

Per input ``{"key", "seq", "question", "a", "b"}`` the run makes, in order, with texts unique to the input so the
stub and the MCP server can count each call:

1. a context retrieval ``ask <key> <seq>: <question>`` over the ``kb`` vector store (embedding + store query);
2. a chat call whose answer asks for the MCP tool ``add`` with ``a`` and ``b``;
3. the tool call, by the built-in tool action, at the calculator MCP server;
4. a second chat call with the tool's result;
5. a long-term-memory search ``recall <key> <seq>`` (an embedding call, once the set holds an item);
6. a long-term-memory add ``note <key> <seq>`` (an embedding call), wrapped as Flink Agents code does it.

The last two share an action, so a run stopped during the add has the search's result in its journal.

then one output ``{"key", "seq", "docs": [ids], "recalled": [notes], "answer", "notes": [every note of
the key, oldest first]}``. ``FULL_RUN_QDRANT_PATH`` is the knowledge base's Qdrant folder and
``CALCULATOR_MCP_URL`` the MCP server's endpoint.
"""

from __future__ import annotations

import json
import os

from agentplan import (
    Agent,
    ChatMessage,
    ChatRequestEvent,
    ChatResponseEvent,
    ContextRetrievalRequestEvent,
    ContextRetrievalResponseEvent,
    Document,
    InputEvent,
    MessageRole,
    OpenAIChatModelConnection,
    OpenAIChatModelSetup,
    OpenAIEmbeddingModelConnection,
    OpenAIEmbeddingModelSetup,
    OutputEvent,
    ResourceDescriptor,
    RunnerContext,
    action,
    chat_model_connection,
    chat_model_setup,
    embedding_model_connection,
    embedding_model_setup,
    mcp_server,
    vector_store,
)
from agentplan.integrations.mcp import MCPServer
from agentplan.integrations.qdrant import QdrantVectorStore

KB_PATH_ENV = "FULL_RUN_QDRANT_PATH"
KB_COLLECTION = "faq"
KB_DOCUMENTS = {"refund": "refund within 30 days", "shipping": "order will ship within 2 days",
                "password": "reset password with the link"}


def call_texts(key: str, seq: int) -> dict[str, str]:
    """What marks a run's calls: the memory search and note texts, the retrieval query's and chat's prefix."""
    return {kind: f"{kind} {key} {seq}" for kind in ("recall", "ask", "note", "chat")}


def load_kb(embeddings_base_url: str, path: str) -> None:
    """Write the knowledge base the agent retrieves from (before any worker opens it)."""
    setup = OpenAIEmbeddingModelSetup(connection=OpenAIEmbeddingModelConnection(
        base_url=embeddings_base_url, api_key="test"), model="stub-embed")
    store = QdrantVectorStore(embedding_model=setup, collection=KB_COLLECTION, path=path)
    store.add([Document(id=doc_id, content=text) for doc_id, text in KB_DOCUMENTS.items()])
    store.close()  # Qdrant's local mode: one process at a time


class FullRunAgent(Agent):
    @embedding_model_connection
    @staticmethod
    def embedder() -> ResourceDescriptor:
        return ResourceDescriptor(clazz=OpenAIEmbeddingModelConnection, request_timeout=30.0)

    @embedding_model_setup
    @staticmethod
    def embeddings() -> ResourceDescriptor:
        return ResourceDescriptor(clazz=OpenAIEmbeddingModelSetup, connection="embedder", model="stub-embed")

    @vector_store
    @staticmethod
    def kb() -> ResourceDescriptor:
        return ResourceDescriptor(clazz=QdrantVectorStore, embedding_model="embeddings", collection=KB_COLLECTION,
                                  path=os.environ.get(KB_PATH_ENV))

    @mcp_server
    @staticmethod
    def calculator() -> ResourceDescriptor:
        return ResourceDescriptor(clazz=MCPServer, endpoint=os.environ.get("CALCULATOR_MCP_URL"), timeout=30)

    @chat_model_connection
    @staticmethod
    def llm() -> ResourceDescriptor:
        return ResourceDescriptor(clazz=OpenAIChatModelConnection, timeout=30.0, max_retries=0)

    @chat_model_setup
    @staticmethod
    def math_model() -> ResourceDescriptor:
        return ResourceDescriptor(clazz=OpenAIChatModelSetup, connection="llm", model="stub", tools=["add"])

    @action(InputEvent)
    @staticmethod
    def look_up(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.sensory_memory.set("input", event.input)
        query = f"{call_texts(event.input['key'], event.input['seq'])['ask']}: {event.input['question']}"
        ctx.send_event(ContextRetrievalRequestEvent(query=query, vector_store="kb", max_results=1))

    @action(ContextRetrievalResponseEvent)
    @staticmethod
    def ask_model(event: ContextRetrievalResponseEvent, ctx: RunnerContext) -> None:
        data = ctx.sensory_memory.get("input")
        ctx.sensory_memory.set("docs", [doc.id for doc in event.documents])
        arguments = json.dumps({"a": data["a"], "b": data["b"]})
        question = f"{call_texts(data['key'], data['seq'])['chat']}: add them [[tool:add {arguments}]]"
        ctx.send_event(ChatRequestEvent(model="math_model",
                                        messages=[ChatMessage(role=MessageRole.USER, content=question)]))

    @action(ChatResponseEvent)
    @staticmethod
    async def remember_and_answer(event: ChatResponseEvent, ctx: RunnerContext) -> None:
        data = ctx.sensory_memory.get("input")
        texts = call_texts(data["key"], data["seq"])
        notes = ctx.long_term_memory.get_memory_set("notes")
        recalled = await notes.asearch(texts["recall"], limit=2)
        # Upstream's form: the add journals its own embedding call (agentplan.long_term_memory).
        await ctx.durable_execute_async(notes.add, items=texts["note"])
        ctx.send_event(OutputEvent(output={"key": data["key"], "seq": data["seq"],
                                           "docs": ctx.sensory_memory.get("docs"),
                                           "recalled": [item.value for item in recalled],
                                           "answer": event.response.content,
                                           "notes": [item.value for item in notes.get()]}))
