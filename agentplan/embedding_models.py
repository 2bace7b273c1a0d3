"""Embedding models: a connection (transport, auth) and a setup (model name and parameters), as for chat.

``embed`` takes one text or a list of texts and returns one vector or a list of vectors, the way
Flink Agents' embedding models do. ``aembed`` is the same call for actions on the event loop; the
base class runs ``embed`` in a thread, integrations with an async client override it.
"""

from __future__ import annotations

import asyncio
import math
import time
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

from agentplan.exceptions import ResourceError
from agentplan.metrics import MetricsSink
from agentplan.resources import Resource, ResourceType

Vector = list[float]


class BaseEmbeddingModelConnection(Resource):
    """Transport to an embedding server."""

    resource_type = ResourceType.EMBEDDING_MODEL_CONNECTION

    @abstractmethod
    def embed(self, text: str | Sequence[str], **kwargs: Any) -> Vector | list[Vector]:
        """The vector of ``text``, or one vector per text of a list. Raise TransientError or
        ChatModelError on failure, like chat connections."""

    async def aembed(self, text: str | Sequence[str], **kwargs: Any) -> Vector | list[Vector]:
        return await asyncio.to_thread(self.embed, text, **kwargs)


class BaseEmbeddingModelSetup(Resource):
    """Which embedding model, with which parameters, over which connection."""

    resource_type = ResourceType.EMBEDDING_MODEL

    def __init__(self, connection: str | BaseEmbeddingModelConnection, model: str | None = None,
                 **params: Any) -> None:
        self.connection_ref = connection
        self.model = model
        self.params = {k: v for k, v in params.items() if v is not None}

    @property
    def connection(self) -> BaseEmbeddingModelConnection:
        ref = self.connection_ref
        conn = self.get_resource(ref, ResourceType.EMBEDDING_MODEL_CONNECTION) if isinstance(ref, str) else ref
        if not isinstance(conn, BaseEmbeddingModelConnection):
            raise ResourceError(f"connection {ref!r} is a {type(conn).__name__}, not an embedding model connection")
        return conn

    @property
    def model_kwargs(self) -> dict[str, Any]:
        """What every call passes to the connection: the model name and the setup's parameters."""
        return {"model": self.model, **self.params}

    def embed(self, text: str | Sequence[str], **kwargs: Any) -> Vector | list[Vector]:
        return self.connection.embed(text, **{**self.model_kwargs, **kwargs})

    async def aembed(self, text: str | Sequence[str], **kwargs: Any) -> Vector | list[Vector]:
        return await self.connection.aembed(text, **{**self.model_kwargs, **kwargs})

    def embed_many(self, texts: Sequence[str]) -> list[Vector]:
        """One vector per text (a list call even for one text)."""
        return as_batch(self.embed(list(texts)), len(texts))

    async def aembed_many(self, texts: Sequence[str]) -> list[Vector]:
        return as_batch(await self.aembed(list(texts)), len(texts))


async def measured_embed(setup: BaseEmbeddingModelSetup, text: str | Sequence[str], metrics: MetricsSink
                         ) -> Vector | list[Vector]:
    """``setup.aembed(text)``, reported as a model request (``agentfleet_llm_requests_total{model}``)."""
    started = time.monotonic()
    try:
        result = await setup.aembed(text)
    except Exception as exc:
        metrics.llm_request(setup.model or "embedding", time.monotonic() - started, exc)
        raise
    metrics.llm_request(setup.model or "embedding", time.monotonic() - started, None)
    return result


def measured_embed_sync(setup: BaseEmbeddingModelSetup, text: str | Sequence[str], metrics: MetricsSink
                        ) -> Vector | list[Vector]:
    """``setup.embed(text)``, reported as :func:`measured_embed` does."""
    started = time.monotonic()
    try:
        result = setup.embed(text)
    except Exception as exc:
        metrics.llm_request(setup.model or "embedding", time.monotonic() - started, exc)
        raise
    metrics.llm_request(setup.model or "embedding", time.monotonic() - started, None)
    return result


def as_batch(result: Any, expected: int) -> list[Vector]:
    """``result`` checked to be ``expected`` vectors."""
    if not isinstance(result, list) or len(result) != expected or not all(isinstance(v, list) for v in result):
        raise ResourceError(f"embedding model returned {type(result).__name__} for {expected} texts, "
                            f"expected {expected} vectors")
    return result


def normalized(vector: Sequence[float]) -> Vector:
    """``vector`` scaled to length 1 (the zero vector stays zero), so a dot product is the cosine."""
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else [0.0 for _ in vector]


def dot(a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) != len(b):
        raise ResourceError(f"vectors of different dimensions ({len(a)} and {len(b)}): was the embedding model "
                            "changed after items were stored?")
    return math.fsum(x * y for x, y in zip(a, b))
