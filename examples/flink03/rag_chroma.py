"""FAQ answers from a Chroma knowledge base (Flink Agents 0.3.1 style): the built-in context retrieval
finds the entries nearest a question, and the chat model answers from them through ``prompt_args``.

The knowledge base is an embedded Chroma store in ``$CHROMA_PERSIST_DIR``, filled beforehand (e.g.
``agentfleet kb load --agent examples.flink03.rag_chroma:FaqRagAgent --vector-store faq_knowledge_base
faq examples/rag/resources/faq.jsonl``). Input ``{"id", "question"}``; output ``{"id", "question",
"sources": [FAQ ids, nearest first], "answer"}``.
"""

import os

from pydantic import BaseModel

from agentplan import (
    Agent,
    ChatMessage,
    ChatRequestEvent,
    ChatResponseEvent,
    ContextRetrievalRequestEvent,
    ContextRetrievalResponseEvent,
    Event,
    InputEvent,
    MessageRole,
    OutputEvent,
    Prompt,
    ResourceDescriptor,
    ResourceName,
    RunnerContext,
    action,
    chat_model_connection,
    chat_model_setup,
    embedding_model_connection,
    embedding_model_setup,
    prompt,
    vector_store,
)

FAQ_COLLECTION = "faq"


class FaqQuestion(BaseModel):
    id: str
    question: str


faq_prompt = Prompt.from_messages(
    messages=[
        ChatMessage(
            role=MessageRole.SYSTEM,
            content="You answer customer questions. Use only these FAQ entries:\n{context}",
        ),
        ChatMessage(role=MessageRole.USER, content="Customer question: {user_query}"),
    ],
)


class FaqRagAgent(Agent):
    @embedding_model_connection
    @staticmethod
    def openai_embedding_connection() -> ResourceDescriptor:
        return ResourceDescriptor(
            clazz=ResourceName.EmbeddingModel.OPENAI_CONNECTION,
            base_url=os.environ.get("OPENAI_BASE_URL"),
            api_key=os.environ.get("OPENAI_API_KEY"),
            request_timeout=30.0,
            max_retries=3,
        )

    @embedding_model_setup
    @staticmethod
    def faq_embedder() -> ResourceDescriptor:
        return ResourceDescriptor(
            clazz=ResourceName.EmbeddingModel.OPENAI_SETUP,
            connection="openai_embedding_connection",
            model=os.environ.get("OPENAI_EMBEDDING_MODEL", "text-embedding-3-small"),
            encoding_format="float",
        )

    @vector_store
    @staticmethod
    def faq_knowledge_base() -> ResourceDescriptor:
        return ResourceDescriptor(
            clazz=ResourceName.VectorStore.CHROMA_VECTOR_STORE,
            embedding_model="faq_embedder",
            persist_directory=os.environ.get("CHROMA_PERSIST_DIR", "chroma_db"),
            collection=FAQ_COLLECTION,
            collection_metadata={"source": "faq.jsonl"},
            auto_create_collection=True,
        )

    @prompt
    @staticmethod
    def faq_prompt() -> Prompt:
        return faq_prompt

    @chat_model_connection
    @staticmethod
    def openai_connection() -> ResourceDescriptor:
        return ResourceDescriptor(
            clazz=ResourceName.ChatModel.OPENAI_COMPLETIONS_CONNECTION,
            api_base_url=os.environ.get("OPENAI_BASE_URL"),
            api_key=os.environ.get("OPENAI_API_KEY"),
            max_retries=3,
            timeout=60.0,
            reuse_client=True,
        )

    @chat_model_setup
    @staticmethod
    def faq_answerer() -> ResourceDescriptor:
        return ResourceDescriptor(
            clazz=ResourceName.ChatModel.OPENAI_COMPLETIONS_SETUP,
            connection="openai_connection",
            model=os.environ.get("OPENAI_MODEL", "qwen3:8b"),
            prompt="faq_prompt",
            temperature=0.0,
            max_tokens=512,
        )

    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def retrieve_context(event: Event, ctx: RunnerContext) -> None:
        question = FaqQuestion.model_validate(InputEvent.from_event(event).input)
        ctx.short_term_memory.set("id", question.id)
        ctx.send_event(
            ContextRetrievalRequestEvent(
                query=question.question,
                vector_store="faq_knowledge_base",
                max_results=2,
            )
        )

    @action(ContextRetrievalResponseEvent.EVENT_TYPE)
    @staticmethod
    def ask_with_context(event: Event, ctx: RunnerContext) -> None:
        retrieval = ContextRetrievalResponseEvent.from_event(event)
        ctx.short_term_memory.set("question", retrieval.query)
        ctx.short_term_memory.set("sources", [doc.id for doc in retrieval.documents])
        context = "\n".join(f"{i + 1}. {doc.content}" for i, doc in enumerate(retrieval.documents))
        ctx.send_event(
            ChatRequestEvent(
                model="faq_answerer",
                messages=[ChatMessage(role=MessageRole.USER, content="")],
                prompt_args={"context": context, "user_query": retrieval.query},
            )
        )

    @action(ChatResponseEvent.EVENT_TYPE)
    @staticmethod
    def emit_answer(event: Event, ctx: RunnerContext) -> None:
        response = ChatResponseEvent.from_event(event).response
        ctx.send_event(
            OutputEvent(
                output={
                    "id": ctx.short_term_memory.get("id"),
                    "question": ctx.short_term_memory.get("question"),
                    "sources": ctx.short_term_memory.get("sources"),
                    "answer": response.content,
                }
            )
        )
