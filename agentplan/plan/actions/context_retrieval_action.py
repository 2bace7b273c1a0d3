"""The built-in context retrieval action: a vector store query as one durable call.

The query (the embedding call, reported as a model request, and the store lookup) is journaled like a
model call: a run replayed after a crash reuses the recorded documents instead of querying again.
"""

from __future__ import annotations

from agentplan.embedding_models import measured_embed
from agentplan.exceptions import ResourceError
from agentplan.resources import ResourceType
from agentplan.retrieval_events import ContextRetrievalRequestEvent, ContextRetrievalResponseEvent
from agentplan.runner_context import RunnerContext
from agentplan.vector_stores import BaseVectorStore, VectorStoreQuery, VectorStoreQueryResult

CONTEXT_RETRIEVAL_ACTION = "context_retrieval_action"


async def context_retrieval_action(event: ContextRetrievalRequestEvent, ctx: RunnerContext) -> None:
    store = ctx.get_resource(event.vector_store, ResourceType.VECTOR_STORE)
    if not isinstance(store, BaseVectorStore):
        raise ResourceError(f"{event.vector_store!r} is a {type(store).__name__}, not a vector store")
    query = VectorStoreQuery(query_text=event.query, limit=event.max_results)

    async def retrieve() -> VectorStoreQueryResult:
        vector = await measured_embed(store.embedding_model, query.query_text, ctx.metrics)
        return await store.asearch(query, vector)  # type: ignore[arg-type]

    result: VectorStoreQueryResult = await ctx.durable_execute_async(retrieve)
    ctx.send_event(ContextRetrievalResponseEvent(request_id=event.id, query=event.query, documents=result.documents))
