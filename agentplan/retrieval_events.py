"""Events of the built-in context retrieval (RAG) action, as Flink Agents' ``context_retrieval_event``."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from agentplan.events import Event
from agentplan.vector_stores import Document


class ContextRetrievalRequestEvent(Event):
    """Ask the vector store named ``vector_store`` for the ``max_results`` documents nearest ``query``;
    answered by a :class:`ContextRetrievalResponseEvent`."""

    EVENT_TYPE: ClassVar[str] = "_context_retrieval_request_event"

    query: str
    vector_store: str
    max_results: int = Field(3, ge=1)


class ContextRetrievalResponseEvent(Event):
    """The documents found for request ``request_id``, best first (``Document.score`` set)."""

    EVENT_TYPE: ClassVar[str] = "_context_retrieval_response_event"

    request_id: str
    query: str
    documents: list[Document] = Field(default_factory=list)
