"""Qdrant as a vector store: local mode (``path`` on disk, or ``location=":memory:"``) or a server (``url``).

Needs ``qdrant-client`` (``pip install 'kafka-agent-fleet[qdrant]'``). Collections use cosine distance
and are created at the first add with the embedding's size (or by ``create_collection_if_not_exists``
with ``vector_size``). Qdrant point ids must be UUIDs or integers: a document id is mapped to a UUID
derived from it and kept in the payload. Filters: ``{"field": value, ...}``, all fields equal.
"""

from __future__ import annotations

import uuid
from typing import Any

from agentplan.embedding_models import BaseEmbeddingModelSetup, Vector
from agentplan.exceptions import ResourceError
from agentplan.vector_stores import BaseVectorStore, Document

_POINT_NAMESPACE = uuid.UUID("0b6c1b48-6f5e-4f4a-9d43-6b7f2a1f8e11")


def point_id(doc_id: str) -> str:
    return str(uuid.uuid5(_POINT_NAMESPACE, doc_id))


class QdrantVectorStore(BaseVectorStore):
    """``url`` (and ``api_key``) for a server; ``path`` for local mode on disk; neither for local mode in memory."""

    def __init__(self, embedding_model: str | BaseEmbeddingModelSetup | None = None, collection: str | None = None,
                 url: str | None = None, api_key: str | None = None, path: str | None = None,
                 location: str | None = None, timeout: float | None = None, **store_kwargs: Any) -> None:
        super().__init__(embedding_model, collection, **store_kwargs)
        if sum(x is not None for x in (url, path, location)) > 1:
            raise ResourceError("QdrantVectorStore: give one of url (server), path (local on disk), location")
        self.url = url
        self.api_key = api_key
        self.path = path
        self.location = location if (url or path or location) else ":memory:"
        self.timeout = timeout
        self._client: Any = None

    def __repr__(self) -> str:
        return f"QdrantVectorStore({self.url or self.path or self.location}, collection={self.collection!r})"

    @property
    def client(self) -> Any:
        if self._client is None:
            from qdrant_client import QdrantClient

            timeout = int(self.timeout) if self.timeout is not None else None
            if self.url:
                self._client = QdrantClient(url=self.url, api_key=self.api_key, timeout=timeout)
            elif self.path:
                self._client = QdrantClient(path=self.path)
            else:
                self._client = QdrantClient(location=self.location)
        return self._client

    def _filter(self, filters: dict[str, Any] | None) -> Any:
        if not filters:
            return None
        from qdrant_client import models

        return models.Filter(must=[models.FieldCondition(key=f"metadata.{k}", match=models.MatchValue(value=v))
                                   for k, v in filters.items()])

    def create_collection_if_not_exists(self, name: str, **kwargs: Any) -> None:
        size = kwargs.get("vector_size") or kwargs.get("size")
        if size is None:
            size = len(self.embedding_model.embed("dimension probe"))
        self._ensure(name, int(size))

    def _ensure(self, name: str, size: int) -> None:
        from qdrant_client import models

        if not self.client.collection_exists(name):
            self.client.create_collection(name, vectors_config=models.VectorParams(size=size,
                                                                                   distance=models.Distance.COSINE))

    def delete_collection(self, name: str) -> None:
        if self.client.collection_exists(name):
            self.client.delete_collection(name)

    def _upsert(self, collection: str, documents: list[Document]) -> None:
        from qdrant_client import models

        assert documents[0].embedding is not None
        self._ensure(collection, len(documents[0].embedding))
        points = [models.PointStruct(id=point_id(d.id or ""), vector=d.embedding or [],
                                     payload={"id": d.id, "content": d.content, "metadata": d.metadata})
                  for d in documents]
        self.client.upsert(collection, points=points, wait=True)

    @staticmethod
    def _document(point: Any, score: float | None = None) -> Document:
        payload = point.payload or {}
        return Document(id=payload.get("id") or str(point.id), content=payload.get("content", ""),
                        metadata=payload.get("metadata") or {}, score=score)

    def _query(self, collection: str, vector: Vector, limit: int, filters: dict[str, Any] | None,
               **kwargs: Any) -> list[Document]:
        if not self.client.collection_exists(collection):
            return []
        found = self.client.query_points(collection, query=vector, limit=limit, query_filter=self._filter(filters),
                                         with_payload=True)
        return [self._document(p, p.score) for p in found.points]

    def _get(self, collection: str, ids: list[str] | None, filters: dict[str, Any] | None,
             limit: int) -> list[Document]:
        if not self.client.collection_exists(collection):
            return []
        if ids is not None:
            points = self.client.retrieve(collection, ids=[point_id(i) for i in ids], with_payload=True)
            docs = [self._document(p) for p in points]
            wanted = self._filter(filters)
            if wanted is not None:
                docs = [d for d in docs if all(d.metadata.get(k) == v for k, v in (filters or {}).items())]
            return docs[:limit]
        points, _next = self.client.scroll(collection, scroll_filter=self._filter(filters), limit=limit,
                                           with_payload=True)
        return [self._document(p) for p in points]

    def _delete(self, collection: str, ids: list[str] | None, filters: dict[str, Any] | None) -> None:
        from qdrant_client import models

        if not self.client.collection_exists(collection):
            return
        if ids is not None:
            selector: Any = models.PointIdsList(points=[point_id(i) for i in ids])
            if filters:  # both: only the listed points that also match
                keep = {d.id for d in self._get(collection, ids, filters, len(ids))}
                selector = models.PointIdsList(points=[point_id(i) for i in ids if i in keep])
        else:
            selector = models.FilterSelector(filter=self._filter(filters) or models.Filter(must=[]))
        self.client.delete(collection, points_selector=selector, wait=True)

    def close(self) -> None:
        super().close()
        if self._client is not None:
            self._client.close()
            self._client = None
