"""Long-term memory, Kafka-native: per-key memory sets searched by meaning, kept in the key's own state.

``ctx.long_term_memory.get_memory_set(name)`` gives a :class:`MemorySet` with Flink Agents' API
(``add``, ``get``, ``search``, ``delete``). Unlike upstream's Mem0 backend there is no external store:
items and their embeddings live in the key's short-term memory under :data:`LTM_ROOT`, so they are
rolled back with a failed action, changelogged and committed in the same Kafka transaction as the
outputs, and restored with the key: exactly-once with nothing else to run. Items are stored verbatim
(no LLM fact extraction as Mem0 does).

Embedding on ``add`` and ``search`` is a durable call (a replay reuses the vectors and timestamps),
made with the embedding model setup named by ``long-term-memory.embedding-model-setup``.
Search is cosine similarity in process. Each set keeps at most ``long-term-memory.max-items-per-set``
items (default 100); adding past that evicts the oldest.

Upstream code wraps calls in durable calls (``await ctx.durable_execute_async(ms.add, items=...)``);
that works here too: the engine calls these methods directly (they journal their own embedding
calls), and the awaited form embeds without blocking the event loop. Called directly, ``add`` and
``search`` embed synchronously; ``await ms.aadd(...)`` / ``await ms.asearch(...)`` do not block.
"""

from __future__ import annotations

import base64
import uuid
from array import array
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from agentplan.config import AgentConfiguration
from agentplan.embedding_models import (
    BaseEmbeddingModelSetup,
    as_batch,
    dot,
    measured_embed,
    measured_embed_sync,
    normalized,
)
from agentplan.exceptions import PlanCompileError, ResourceError
from agentplan.resources import ResourceType
from agentplan.runner_context import self_journaled

if TYPE_CHECKING:
    from agentplan.runner_context import RunnerContext

#: Where memory sets live in a key's short-term memory.
LTM_ROOT = "__long_term_memory__"
#: A key's state is one changelog record (1 MB by default in Kafka): 100 items of 768 float32 dims are ~0.4 MB.
DEFAULT_MAX_ITEMS_PER_SET = 100
_ID_NAMESPACE = uuid.UUID("5f0c7a52-4a55-4c4e-8f7e-3f1b0c9d2a61")


class LongTermMemoryOptions:
    """Configuration keys (``AgentConfiguration.set(key, value)`` or the YAML file)."""

    EMBEDDING_MODEL_SETUP = "long-term-memory.embedding-model-setup"
    MAX_ITEMS_PER_SET = "long-term-memory.max-items-per-set"
    #: Flink Agents' Mem0 key, read when the one above is not set (so ported configuration works).
    MEM0_EMBEDDING_MODEL_SETUP = "long-term-memory.mem0.embedding-model-setup"


def config_option(config: AgentConfiguration, key: str) -> Any:
    """``key`` (dotted, dashes or underscores) from flat keys or a nested YAML mapping."""
    value = config.get(key)
    if value is not None:
        return value
    first, *rest = key.split(".")
    node: Any = config.get(first)
    for part in rest:
        if not isinstance(node, dict):
            return None
        node = node.get(part, node.get(part.replace("-", "_")))
    return node


def embedding_setup_name(config: AgentConfiguration) -> str | None:
    """The configured embedding model setup (our key, else upstream's Mem0 key)."""
    name = config_option(config, LongTermMemoryOptions.EMBEDDING_MODEL_SETUP) or config_option(
        config, LongTermMemoryOptions.MEM0_EMBEDDING_MODEL_SETUP)
    return None if name is None else str(name)


def max_items_per_set(config: AgentConfiguration) -> int:
    raw = config_option(config, LongTermMemoryOptions.MAX_ITEMS_PER_SET)
    if raw is None:
        return DEFAULT_MAX_ITEMS_PER_SET
    try:
        value = int(raw)
    except (TypeError, ValueError):
        value = 0
    if value < 1:
        raise PlanCompileError(f"{LongTermMemoryOptions.MAX_ITEMS_PER_SET} must be a positive integer, got {raw!r}")
    return value


def validate_config(config: AgentConfiguration, resources: dict[str, tuple[ResourceType, Any]]) -> None:
    """Misconfiguration fails when the plan is compiled, not at the first memory call."""
    max_items_per_set(config)
    named = embedding_setup_name(config)
    if named is not None:
        entry = resources.get(str(named))
        if entry is None or entry[0] is not ResourceType.EMBEDDING_MODEL:
            raise PlanCompileError(f"{LongTermMemoryOptions.EMBEDDING_MODEL_SETUP} names {named!r}, which is not a "
                                   "declared embedding_model resource")


class MemorySetItem(BaseModel):
    memory_set_name: str
    id: str
    value: str
    created_at: datetime | None = None
    updated_at: datetime | None = None
    additional_metadata: dict[str, Any] | None = None
    #: Cosine similarity to the query (``search`` only).
    score: float | None = None


def _pack(vector: Sequence[float]) -> str:
    return base64.b64encode(array("f", normalized(vector)).tobytes()).decode()


def _unpack(packed: str) -> list[float]:
    floats = array("f")
    floats.frombytes(base64.b64decode(packed))
    return list(floats)


def _as_list(value: Any) -> list[Any]:
    return [value] if isinstance(value, (str, dict)) else list(value)


class LongTermMemory:
    """The memory sets of the current key (one view per action invocation)."""

    def __init__(self, ctx: RunnerContext) -> None:
        self._ctx = ctx

    def get_memory_set(self, name: str) -> MemorySet:
        """The set called ``name``, created empty if new."""
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"memory set name must be a non-empty string without dots, got {name!r}")
        return MemorySet(name, self)

    def delete_memory_set(self, name: str) -> bool:
        """Forget the set and its items; False if it did not exist."""
        return bool(self._ctx.short_term_memory.delete(self.get_memory_set(name)._path))

    def memory_set_names(self) -> list[str]:
        root = self._ctx.short_term_memory.get(LTM_ROOT)
        return root.get_field_names() if root is not None else []

    # -- plumbing for MemorySet ----------------------------------------------------------------------
    def _setup(self) -> BaseEmbeddingModelSetup:
        name = embedding_setup_name(self._ctx.config)
        if name is None:
            raise ResourceError("long-term memory needs an embedding model: set "
                                f"{LongTermMemoryOptions.EMBEDDING_MODEL_SETUP} to an embedding_model resource")
        setup = self._ctx.get_resource(name, ResourceType.EMBEDDING_MODEL)
        if not isinstance(setup, BaseEmbeddingModelSetup):
            raise ResourceError(f"{name!r} is not an embedding model setup")
        return setup

    def _stamped(self, vectors: list[list[float]]) -> dict[str, Any]:
        return {"at": datetime.now(timezone.utc).isoformat(), "vectors": [_pack(v) for v in vectors]}

    def _embed(self, texts: list[str]) -> dict[str, Any]:
        setup = self._setup()
        metrics = self._ctx.metrics
        return self._ctx.durable_execute(
            lambda: self._stamped(as_batch(measured_embed_sync(setup, list(texts), metrics), len(texts))))

    async def _aembed(self, texts: list[str]) -> dict[str, Any]:
        setup = self._setup()

        async def call() -> dict[str, Any]:
            return self._stamped(as_batch(await measured_embed(setup, list(texts), self._ctx.metrics), len(texts)))

        return await self._ctx.durable_execute_async(call)


class MemorySet:
    """A named, bounded set of remembered texts of the current key."""

    def __init__(self, name: str, ltm: LongTermMemory) -> None:
        self.name = name
        self._ltm = ltm

    def __repr__(self) -> str:
        return f"MemorySet({self.name!r})"

    @property
    def _path(self) -> str:
        return f"{LTM_ROOT}.{self.name}"

    def _items(self) -> dict[str, dict[str, Any]]:
        node = self._ltm._ctx.short_term_memory.get(f"{self._path}.items")
        return node.get_fields() if node is not None else {}

    def _item(self, item_id: str, stored: dict[str, Any], score: float | None = None) -> MemorySetItem:
        return MemorySetItem(memory_set_name=self.name, id=item_id, value=stored["value"],
                             created_at=datetime.fromisoformat(stored["created_at"]),
                             updated_at=datetime.fromisoformat(stored["updated_at"]),
                             additional_metadata=stored.get("metadata"), score=score)

    @staticmethod
    def _check_items(items: str | Sequence[str], metadatas: Any) -> tuple[list[str], list[dict[str, Any] | None]]:
        texts = _as_list(items)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("memory set items must be strings")
        metas = [None] * len(texts) if metadatas is None else _as_list(metadatas)
        if len(metas) == 1 and len(texts) > 1:
            metas = metas * len(texts)
        if len(metas) != len(texts):
            raise ValueError(f"{len(texts)} items but {len(metas)} metadatas")
        return texts, metas

    def _store(self, texts: list[str], metas: list[dict[str, Any] | None], embedded: dict[str, Any]) -> list[str]:
        memory = self._ltm._ctx.short_term_memory
        counter = int(memory.get(f"{self._path}.next") or 0)
        ids = []
        for text, meta, packed in zip(texts, metas, embedded["vectors"]):
            counter += 1
            item_id = str(uuid.uuid5(_ID_NAMESPACE, f"{self._ltm._ctx.key!r}/{self.name}/{counter}"))
            memory.set(f"{self._path}.items.{item_id}", {"value": text, "vec": packed, "created_at": embedded["at"],
                                                          "updated_at": embedded["at"], "metadata": meta})
            ids.append(item_id)
        memory.set(f"{self._path}.next", counter)
        limit = max_items_per_set(self._ltm._ctx.config)
        items = memory.get(f"{self._path}.items")
        names = items.get_field_names() if items is not None else []
        for oldest in names[: max(0, len(names) - limit)]:  # insertion order: oldest first
            memory.delete(f"{self._path}.items.{oldest}")
        return ids

    @self_journaled("aadd")
    def add(self, items: str | Sequence[str], metadatas: dict[str, Any] | Sequence[dict[str, Any]] | None = None
            ) -> list[str]:
        """Remember ``items`` (with optional metadata, one dict for all or one per item); returns their ids."""
        texts, metas = self._check_items(items, metadatas)
        return self._store(texts, metas, self._ltm._embed(texts)) if texts else []

    async def aadd(self, items: str | Sequence[str],
                   metadatas: dict[str, Any] | Sequence[dict[str, Any]] | None = None) -> list[str]:
        texts, metas = self._check_items(items, metadatas)
        return self._store(texts, metas, await self._ltm._aembed(texts)) if texts else []

    @self_journaled("aget")
    def get(self, ids: str | Sequence[str] | None = None, filters: dict[str, Any] | None = None,
            limit: int = 100) -> list[MemorySetItem]:
        """Items by id, or the ``limit`` most recent ones (oldest first) whose metadata match ``filters``."""
        stored = self._items()
        if ids is not None:
            chosen = [(i, stored[i]) for i in _as_list(ids) if i in stored]
        else:
            chosen = list(stored.items())
        chosen = [(i, s) for i, s in chosen if _matches(s.get("metadata"), filters)]
        return [self._item(i, s) for i, s in chosen[-limit:]] if limit > 0 else []

    async def aget(self, ids: str | Sequence[str] | None = None, filters: dict[str, Any] | None = None,
                   limit: int = 100) -> list[MemorySetItem]:
        return self.get(ids, filters, limit)

    def _rank(self, query_vector: str, limit: int, filters: dict[str, Any] | None) -> list[MemorySetItem]:
        query = _unpack(query_vector)
        scored = [(dot(query, _unpack(s["vec"])), i, s) for i, s in self._items().items()
                  if _matches(s.get("metadata"), filters)]
        scored.sort(key=lambda entry: -entry[0])
        return [self._item(i, s, score) for score, i, s in scored[:limit]]

    @self_journaled("asearch")
    def search(self, query: str, limit: int = 10, filters: dict[str, Any] | None = None,
               **kwargs: Any) -> list[MemorySetItem]:
        """The ``limit`` items nearest ``query`` (cosine similarity), best first, ``score`` set."""
        if not self._items():
            return []
        return self._rank(self._ltm._embed([query])["vectors"][0], limit, filters)

    async def asearch(self, query: str, limit: int = 10, filters: dict[str, Any] | None = None,
                      **kwargs: Any) -> list[MemorySetItem]:
        if not self._items():
            return []
        return self._rank((await self._ltm._aembed([query]))["vectors"][0], limit, filters)

    @self_journaled("adelete")
    def delete(self, ids: str | Sequence[str] | None = None) -> None:
        """Forget the given items, or all of them (the set stays)."""
        memory = self._ltm._ctx.short_term_memory
        if ids is None:
            memory.delete(f"{self._path}.items")
            return
        for item_id in _as_list(ids):
            memory.delete(f"{self._path}.items.{item_id}")

    async def adelete(self, ids: str | Sequence[str] | None = None) -> None:
        self.delete(ids)

    def size(self) -> int:
        return len(self._items())


def _matches(metadata: dict[str, Any] | None, filters: dict[str, Any] | None) -> bool:
    return not filters or all((metadata or {}).get(k) == v for k, v in filters.items())
