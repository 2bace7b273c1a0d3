"""A RAG agent: find the FAQ entries nearest a question, then answer from them.

The knowledge base is an embedded Chroma store in ``$RAG_KB_DIR`` (default ``state/rag-kb``), filled
with ``agentfleet kb load --agent examples.rag.rag_agent:RagAgent --vector-store faq_store faq
examples/rag/resources/faq.jsonl``. Embeddings and answers come from the OpenAI-compatible endpoint
in ``OPENAI_BASE_URL`` (the stub serves both).

Input: ``{"id": ..., "question": ...}``. Output: ``{"id", "question", "sources": [FAQ ids, best
first], "answer"}``.
"""

from __future__ import annotations

import os

from agentplan import (
    Agent,
    ChatMessage,
    ChatRequestEvent,
    ChatResponseEvent,
    ContextRetrievalRequestEvent,
    ContextRetrievalResponseEvent,
    InputEvent,
    MessageRole,
    OpenAIChatModelConnection,
    OpenAIChatModelSetup,
    OpenAIEmbeddingModelConnection,
    OpenAIEmbeddingModelSetup,
    OutputEvent,
    Prompt,
    ResourceDescriptor,
    RunnerContext,
    action,
    chat_model_connection,
    chat_model_setup,
    embedding_model_connection,
    embedding_model_setup,
    prompt,
    vector_store,
)
from agentplan.integrations.chroma import ChromaVectorStore

KB_DIR_ENV = "RAG_KB_DIR"
COLLECTION = "faq"


class RagAgent(Agent):
    @embedding_model_connection
    @staticmethod
    def embedder() -> ResourceDescriptor:
        return ResourceDescriptor(clazz=OpenAIEmbeddingModelConnection, request_timeout=30.0)

    @embedding_model_setup
    @staticmethod
    def embeddings() -> ResourceDescriptor:
        return ResourceDescriptor(clazz=OpenAIEmbeddingModelSetup, connection="embedder")

    @vector_store
    @staticmethod
    def faq_store() -> ResourceDescriptor:
        return ResourceDescriptor(clazz=ChromaVectorStore, embedding_model="embeddings", collection=COLLECTION,
                                  persist_directory=os.environ.get(KB_DIR_ENV, "state/rag-kb"))

    @chat_model_connection
    @staticmethod
    def llm() -> ResourceDescriptor:
        return ResourceDescriptor(clazz=OpenAIChatModelConnection, timeout=60.0)

    @prompt
    @staticmethod
    def answer_prompt() -> Prompt:
        return Prompt.from_messages([
            ChatMessage(role=MessageRole.SYSTEM, content="Answer the question using only this context:\n{context}"),
            ChatMessage(role=MessageRole.USER, content="{question}"),
        ])

    @chat_model_setup
    @staticmethod
    def answerer() -> ResourceDescriptor:
        return ResourceDescriptor(clazz=OpenAIChatModelSetup, connection="llm", prompt="answer_prompt")

    @action(InputEvent)
    @staticmethod
    def retrieve(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.sensory_memory.set("id", event.input["id"])
        ctx.send_event(ContextRetrievalRequestEvent(query=event.input["question"], vector_store="faq_store",
                                                    max_results=2))

    @action(ContextRetrievalResponseEvent)
    @staticmethod
    def ask(event: ContextRetrievalResponseEvent, ctx: RunnerContext) -> None:
        ctx.sensory_memory.set("sources", [doc.id for doc in event.documents])
        context = "\n".join(f"- {doc.content}" for doc in event.documents)
        ctx.sensory_memory.set("question", event.query)
        ctx.send_event(ChatRequestEvent(model="answerer", messages=[ChatMessage(
            role=MessageRole.USER, content="", extra_args={"context": context, "question": event.query})]))

    @action(ChatResponseEvent)
    @staticmethod
    def answer(event: ChatResponseEvent, ctx: RunnerContext) -> None:
        ctx.send_event(OutputEvent(output={"id": ctx.sensory_memory.get("id"),
                                           "question": ctx.sensory_memory.get("question"),
                                           "sources": ctx.sensory_memory.get("sources"),
                                           "answer": event.response.content}))
