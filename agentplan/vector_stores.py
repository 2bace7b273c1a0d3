"""Vector stores: documents with embeddings, searched by meaning (Flink Agents' vector store API).

The store embeds with the embedding model setup it names (``embedding_model``), never with a
function of its own, so the same model embeds the knowledge base and the queries. Integrations
implement the five storage primitives (``_upsert``, ``_query``, ``_get``, ``_delete``,
``_collections``) plus collection management; documents, ids and embedding live here.

Stores are called from threads (the built-in retrieval action runs ``aquery`` with the store part in
the store's own single-thread executor: embedded clients such as Chroma's and Qdrant's local mode are
not built for concurrent use), so integrations need no locking of their own.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import uuid
from abc import abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel, Field

from agentplan.embedding_models import BaseEmbeddingModelSetup, Vector
from agentplan.exceptions import AgentPlanError, ResourceError, TransientError
from agentplan.resources import Resource, ResourceType


class VectorStoreQueryMode(str, enum.Enum):
    SEMANTIC = "semantic"


class Document(BaseModel):
    """A piece of text with metadata; ``embedding`` and ``score`` are filled by the store."""

    content: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    id: str | None = None
    embedding: list[float] | None = None
    score: float | None = None


class VectorStoreQuery(BaseModel):
    mode: VectorStoreQueryMode = VectorStoreQueryMode.SEMANTIC
    query_text: str
    limit: int = Field(10, ge=1)
    collection_name: str | None = None
    filters: dict[str, Any] | None = None
    extra_args: dict[str, Any] = Field(default_factory=dict)


class VectorStoreQueryResult(BaseModel):
    documents: list[Document] = Field(default_factory=list)


#: Transport failures of the stores' HTTP clients (httpx, used by chromadb and qdrant-client), by class name.
_TRANSPORT_FAILURES = {"ConnectError", "ConnectTimeout", "ReadTimeout", "WriteTimeout", "PoolTimeout", "ReadError",
                       "WriteError", "RemoteProtocolError"}


def unreachable(exc: BaseException) -> TransientError | None:
    """A TransientError when ``exc`` comes from a store server that cannot be reached (refused, reset,
    timed out) or answered 5xx, so the engine retries instead of failing the run; else None."""
    cause: BaseException | None = exc
    for _ in range(10):  # bounded: cause chains are short and must not loop
        if cause is None or isinstance(cause, AgentPlanError):
            return None
        status = getattr(cause, "status_code", None)
        if isinstance(cause, (OSError, TimeoutError)) or type(cause).__name__ in _TRANSPORT_FAILURES or (
                isinstance(status, int) and status >= 500):
            return TransientError(f"vector store unreachable: {type(cause).__name__}: {cause}", kind="vector_store")
        cause = cause.__cause__ or cause.__context__
    return None


def document_id(content: str, metadata: dict[str, Any] | None = None) -> str:
    """A stable id for a document given without one (so loading the same file twice changes nothing)."""
    source = content + "\x00" + repr(sorted((metadata or {}).items()))
    return str(uuid.UUID(bytes=hashlib.blake2b(source.encode(), digest_size=16).digest()))


class BaseVectorStore(Resource):
    """A collection-based vector store. ``collection`` is the default collection of every call."""

    resource_type = ResourceType.VECTOR_STORE

    def __init__(self, embedding_model: str | BaseEmbeddingModelSetup | None = None, collection: str | None = None,
                 **store_kwargs: Any) -> None:
        self.embedding_model_ref = embedding_model
        self.collection = collection
        self.store_kwargs = store_kwargs
        self._executor: ThreadPoolExecutor | None = None

    # -- helpers -------------------------------------------------------------------------------------
    @property
    def embedding_model(self) -> BaseEmbeddingModelSetup:
        ref = self.embedding_model_ref
        if ref is None:
            raise ResourceError(f"{type(self).__name__} has no embedding_model: name an embedding model setup")
        setup = self.get_resource(ref, ResourceType.EMBEDDING_MODEL) if isinstance(ref, str) else ref
        if not isinstance(setup, BaseEmbeddingModelSetup):
            raise ResourceError(f"embedding_model {ref!r} is a {type(setup).__name__}, not an embedding model setup")
        return setup

    def _collection(self, name: str | None) -> str:
        chosen = name or self.collection
        if not chosen:
            raise ResourceError(f"{type(self).__name__}: no collection given and no default 'collection' configured")
        return chosen

    def _prepared(self, documents: Sequence[Document]) -> list[Document]:
        """Copies with ids and embeddings (embedded in one call for those without)."""
        docs = [d.model_copy(update={"id": d.id or document_id(d.content, d.metadata)}) for d in documents]
        missing = [d for d in docs if d.embedding is None]
        if missing:
            vectors = self.embedding_model.embed_many([d.content for d in missing])
            for doc, vector in zip(missing, vectors):
                doc.embedding = vector
        return docs

    # -- Flink Agents API ----------------------------------------------------------------------------
    def add(self, documents: Document | Sequence[Document], collection_name: str | None = None,
            **kwargs: Any) -> list[str]:
        """Store documents (embedding those without an embedding); returns their ids. Adding a
        document whose id exists replaces it."""
        docs = self._prepared([documents] if isinstance(documents, Document) else documents)
        if docs:
            try:
                self._upsert(self._collection(collection_name), docs)
            except Exception as exc:
                transient = unreachable(exc)
                if transient is None:
                    raise
                raise transient from exc
        return [d.id or "" for d in docs]

    def update(self, documents: Document | Sequence[Document], collection_name: str | None = None,
               **kwargs: Any) -> None:
        docs = [documents] if isinstance(documents, Document) else list(documents)
        if any(d.id is None for d in docs):
            raise ResourceError("update needs the id of every document")
        self.add(docs, collection_name)

    def query(self, query: VectorStoreQuery) -> VectorStoreQueryResult:
        """The ``query.limit`` documents nearest ``query.query_text``, best first, with ``score``
        (cosine similarity); embeddings are left out."""
        if query.mode is not VectorStoreQueryMode.SEMANTIC:
            raise ResourceError(f"unsupported query mode {query.mode!r}")
        vector: Any = self.embedding_model.embed(query.query_text)
        return self._search(query, vector)

    async def aquery(self, query: VectorStoreQuery) -> VectorStoreQueryResult:
        """:meth:`query` for the event loop: the embedding call is async, the store part runs in the
        store's thread."""
        if query.mode is not VectorStoreQueryMode.SEMANTIC:
            raise ResourceError(f"unsupported query mode {query.mode!r}")
        return await self.asearch(query, await self.embedding_model.aembed(query.query_text))  # type: ignore[arg-type]

    async def asearch(self, query: VectorStoreQuery, vector: Vector) -> VectorStoreQueryResult:
        """The store part of :meth:`aquery`, for a query already embedded."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{type(self).__name__}")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._search, query, vector)

    def _search(self, query: VectorStoreQuery, vector: Vector) -> VectorStoreQueryResult:
        try:
            docs = self._query(self._collection(query.collection_name), vector, query.limit, query.filters,
                               **query.extra_args)
        except Exception as exc:
            transient = unreachable(exc)
            if transient is None:
                raise
            raise transient from exc
        return VectorStoreQueryResult(documents=docs)

    def get(self, ids: str | Sequence[str] | None = None, collection_name: str | None = None,
            filters: dict[str, Any] | None = None, limit: int = 100, **kwargs: Any) -> list[Document]:
        id_list = [ids] if isinstance(ids, str) else list(ids) if ids is not None else None
        return self._get(self._collection(collection_name), id_list, filters, limit)

    def delete(self, ids: str | Sequence[str] | None = None, collection_name: str | None = None,
               filters: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """Delete by ids and/or metadata filters; neither deletes every document of the collection."""
        id_list = [ids] if isinstance(ids, str) else list(ids) if ids is not None else None
        self._delete(self._collection(collection_name), id_list, filters)

    @abstractmethod
    def create_collection_if_not_exists(self, name: str, **kwargs: Any) -> None: ...

    @abstractmethod
    def delete_collection(self, name: str) -> None: ...

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    # -- storage primitives --------------------------------------------------------------------------
    @abstractmethod
    def _upsert(self, collection: str, documents: list[Document]) -> None:
        """Insert or replace documents (ids and embeddings set)."""

    @abstractmethod
    def _query(self, collection: str, vector: Vector, limit: int, filters: dict[str, Any] | None,
               **kwargs: Any) -> list[Document]:
        """Nearest documents by cosine similarity, best first, ``score`` set, no embeddings;
        an empty list for a collection that does not exist."""

    @abstractmethod
    def _get(self, collection: str, ids: list[str] | None, filters: dict[str, Any] | None,
             limit: int) -> list[Document]: ...

    @abstractmethod
    def _delete(self, collection: str, ids: list[str] | None, filters: dict[str, Any] | None) -> None: ...


#: Flink Agents' name for stores that manage collections; every store here does.
CollectionManageableVectorStore = BaseVectorStore
