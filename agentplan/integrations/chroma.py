"""Chroma as a vector store: embedded (``persist_directory``, or in memory) or a server (``host``/``port``).

Needs ``chromadb`` (``pip install 'kafka-agent-fleet[chroma]'``). Collections use cosine distance and
no embedding function of Chroma's: vectors come from the store's embedding model setup. Filters are
Chroma ``where`` clauses; a plain ``{"field": value, ...}`` means all fields equal.
"""

from __future__ import annotations

from typing import Any

from agentplan.embedding_models import BaseEmbeddingModelSetup, Vector
from agentplan.exceptions import ResourceError
from agentplan.vector_stores import BaseVectorStore, Document

_COSINE = {"hnsw:space": "cosine"}


def _where(filters: dict[str, Any] | None) -> dict[str, Any] | None:
    if not filters:
        return None
    if len(filters) == 1 or any(k.startswith("$") for k in filters):
        return filters
    return {"$and": [{k: v} for k, v in filters.items()]}


class ChromaVectorStore(BaseVectorStore):
    """Flink Agents' ``ChromaVectorStore`` arguments: ``persist_directory`` for an embedded store on
    disk, ``host``/``port`` (and ``api_key``) for a server, neither for an in-memory store."""

    def __init__(self, embedding_model: str | BaseEmbeddingModelSetup | None = None, collection: str | None = None,
                 persist_directory: str | None = None, host: str | None = None, port: int = 8000,
                 api_key: str | None = None, ssl: bool = False, client_settings: Any = None,
                 tenant: str = "default_tenant", database: str = "default_database",
                 collection_metadata: dict[str, Any] | None = None, auto_create_collection: bool = True,
                 **store_kwargs: Any) -> None:
        super().__init__(embedding_model, collection, **store_kwargs)
        if persist_directory and host:
            raise ResourceError("ChromaVectorStore: give persist_directory (embedded) or host (server), not both")
        self.persist_directory = persist_directory
        self.host = host
        self.port = port
        self.api_key = api_key
        self.ssl = ssl
        self.client_settings = client_settings or {}
        self.tenant = tenant
        self.database = database
        self.collection_metadata = {**_COSINE, **(collection_metadata or {})}
        self.auto_create_collection = auto_create_collection
        self._client: Any = None

    def __repr__(self) -> str:
        where = self.persist_directory or (f"{self.host}:{self.port}" if self.host else "memory")
        return f"ChromaVectorStore({where}, collection={self.collection!r})"

    @property
    def client(self) -> Any:
        if self._client is None:
            import chromadb
            from chromadb.config import Settings

            given = self.client_settings
            settings = given if isinstance(given, Settings) else Settings(**{"anonymized_telemetry": False, **given})
            if self.host:
                headers = {"x-chroma-token": self.api_key} if self.api_key else None
                self._client = chromadb.HttpClient(host=self.host, port=self.port, ssl=self.ssl, headers=headers,
                                                   settings=settings, tenant=self.tenant, database=self.database)
            elif self.persist_directory:
                self._client = chromadb.PersistentClient(path=self.persist_directory, settings=settings,
                                                         tenant=self.tenant, database=self.database)
            else:
                self._client = chromadb.EphemeralClient(settings=settings, tenant=self.tenant, database=self.database)
        return self._client

    def _collection_handle(self, name: str, create: bool) -> Any:
        if create:
            return self.client.get_or_create_collection(name, metadata=self.collection_metadata,
                                                        embedding_function=None)
        try:
            return self.client.get_collection(name, embedding_function=None)
        except Exception as exc:  # chromadb raises NotFoundError (ValueError before 1.0)
            if "does not exist" in str(exc) or type(exc).__name__ == "NotFoundError":
                return None
            raise

    def create_collection_if_not_exists(self, name: str, **kwargs: Any) -> None:
        metadata = {**self.collection_metadata, **(kwargs.get("metadata") or {})}
        self.client.get_or_create_collection(name, metadata=metadata, embedding_function=None)

    def delete_collection(self, name: str) -> None:
        if self._collection_handle(name, create=False) is not None:
            self.client.delete_collection(name)

    def _upsert(self, collection: str, documents: list[Document]) -> None:
        handle = self._collection_handle(collection, create=self.auto_create_collection)
        if handle is None:
            raise ResourceError(f"Chroma collection {collection!r} does not exist (auto_create_collection is off)")
        handle.upsert(ids=[d.id for d in documents], embeddings=[d.embedding for d in documents],
                      documents=[d.content for d in documents],
                      metadatas=[d.metadata or None for d in documents])

    def _query(self, collection: str, vector: Vector, limit: int, filters: dict[str, Any] | None,
               **kwargs: Any) -> list[Document]:
        handle = self._collection_handle(collection, create=False)
        if handle is None:
            return []
        found = handle.query(query_embeddings=[vector], n_results=limit, where=_where(filters),
                             include=["documents", "metadatas", "distances"])
        return [Document(id=i, content=c or "", metadata=m or {}, score=1.0 - d)
                for i, c, m, d in zip(found["ids"][0], found["documents"][0], found["metadatas"][0],
                                      found["distances"][0])]

    def _get(self, collection: str, ids: list[str] | None, filters: dict[str, Any] | None,
             limit: int) -> list[Document]:
        handle = self._collection_handle(collection, create=False)
        if handle is None:
            return []
        found = handle.get(ids=ids, where=_where(filters), limit=limit, include=["documents", "metadatas"])
        return [Document(id=i, content=c or "", metadata=m or {})
                for i, c, m in zip(found["ids"], found["documents"], found["metadatas"])]

    def _delete(self, collection: str, ids: list[str] | None, filters: dict[str, Any] | None) -> None:
        handle = self._collection_handle(collection, create=False)
        if handle is None:
            return
        if ids is None and not filters:
            ids = handle.get(include=[])["ids"]
            if not ids:
                return
        handle.delete(ids=ids, where=_where(filters))
