"""OpenAI-compatible embedding models over ``/v1/embeddings`` (OpenAI, Ollama, vLLM, LiteLLM, ...).

Failures are classified as for chat (:func:`agentplan.integrations.openai.classify_error`): the engine
retries transient ones. The async path shares the chat connection's client handling (one client per
event loop, the lean transport, endpoint health); the sync path, for ``embed`` outside the event loop
(vector stores in their threads, ``agentfleet kb load``), has a client of its own.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from array import array
from collections.abc import Sequence
from typing import Any

import openai

from agentplan.embedding_models import BaseEmbeddingModelConnection, BaseEmbeddingModelSetup, Vector
from agentplan.exceptions import ChatModelError, ResourceError
from agentplan.integrations._lean_http import httpx_module
from agentplan.integrations.openai import OpenAIChatModelConnection, classify_error

DEFAULT_EMBEDDING_MODEL_ENV = "OPENAI_EMBEDDING_MODEL"
DEFAULT_EMBEDDING_MODEL = "text-embedding-3-small"


class OpenAIEmbeddingModelConnection(BaseEmbeddingModelConnection):
    """Connection to an OpenAI-compatible embeddings endpoint.

    Takes Flink Agents' names (``base_url``, ``request_timeout``) and the chat connection's
    (``api_base_url``, ``timeout``); falls back to ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``.
    Like the chat connection, each call is one request: the engine is the one retry layer, so
    ``max_retries`` has no effect.
    """

    def __init__(self, api_key: str | None = None, base_url: str | None = None, request_timeout: float | None = None,
                 max_retries: int | None = None, organization: str | None = None, project: str | None = None,
                 api_base_url: str | None = None, timeout: float | None = None,
                 default_headers: dict[str, str] | None = None, **_ignored: Any) -> None:
        self.api_base_url = base_url or api_base_url or os.environ.get("OPENAI_BASE_URL")
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY")
        self.timeout = float(request_timeout or timeout or 60.0)
        self.organization = organization
        self.project = project
        self.default_headers = default_headers
        self._async = OpenAIChatModelConnection(api_base_url=self.api_base_url, api_key=self.api_key,
                                                timeout=self.timeout, organization=organization,
                                                default_headers=default_headers)
        self._sync: openai.OpenAI | None = None
        self._sync_lock = threading.Lock()

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIEmbeddingModelConnection(base_url={self.api_base_url!r})"

    def _sync_client(self) -> openai.OpenAI:
        with self._sync_lock:
            if self._sync is None:
                if not self.api_key:
                    raise ResourceError("OpenAI embedding connection has no API key: set api_key or OPENAI_API_KEY")
                self._sync = openai.OpenAI(base_url=self.api_base_url, api_key=self.api_key, timeout=self.timeout,
                                           max_retries=0, organization=self.organization, project=self.project,
                                           default_headers=self.default_headers)
            return self._sync

    @staticmethod
    def _request(text: str | Sequence[str], kwargs: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(text, str) and not (isinstance(text, Sequence) and all(isinstance(t, str) for t in text)):
            raise TypeError(f"embed expects a str or a list of str, got {type(text).__name__}")
        params = {k: v for k, v in kwargs.items() if v is not None}
        params["model"] = params.get("model") or os.environ.get(DEFAULT_EMBEDDING_MODEL_ENV, DEFAULT_EMBEDDING_MODEL)
        params.setdefault("encoding_format", "float")
        return {"input": text if isinstance(text, str) else list(text), **params}

    def embed(self, text: str | Sequence[str], **kwargs: Any) -> Vector | list[Vector]:
        request = self._request(text, kwargs)
        try:
            response = self._sync_client().post("/embeddings", body=request, cast_to=httpx_module.Response)
        except openai.OpenAIError as exc:
            raise classify_error(exc) from exc
        return _unwrap(text, parse_embeddings(response.content))

    async def aembed(self, text: str | Sequence[str], **kwargs: Any) -> Vector | list[Vector]:
        request = self._request(text, kwargs)
        try:
            response = await self._async.client().post("/embeddings", body=request, cast_to=httpx_module.Response)
        except openai.OpenAIError as exc:
            error = classify_error(exc)
            self._async._report(exc, error)
            raise error from exc
        return _unwrap(text, parse_embeddings(response.content))

    async def aclose(self) -> None:
        await self._async.aclose()


def _unwrap(text: str | Sequence[str], vectors: list[Vector]) -> Vector | list[Vector]:
    if isinstance(text, str):
        if len(vectors) != 1:
            raise ChatModelError(f"invalid response from the embedding server: {len(vectors)} vectors for one text")
        return vectors[0]
    if len(vectors) != len(text):
        raise ChatModelError(f"invalid response from the embedding server: {len(vectors)} vectors for "
                             f"{len(text)} texts")
    return vectors


def parse_embeddings(body: bytes) -> list[Vector]:
    """The vectors of an embeddings response, in input order; ChatModelError naming what is wrong."""
    try:
        data = json.loads(body)
        items = sorted(data["data"], key=lambda item: item.get("index", 0))
        vectors = []
        for item in items:
            raw = item["embedding"]
            if isinstance(raw, str):  # encoding_format=base64: little-endian float32
                floats = array("f")
                floats.frombytes(base64.b64decode(raw))
                vectors.append(list(floats))
            elif isinstance(raw, list) and all(isinstance(x, (int, float)) for x in raw):
                vectors.append([float(x) for x in raw])
            else:
                raise TypeError("embedding is neither a list of numbers nor base64")
        return vectors
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        excerpt = body[:200].decode("utf-8", errors="replace")
        raise ChatModelError(f"invalid response from the embedding server: {exc!r}; body starts {excerpt!r}") from None


class OpenAIEmbeddingModelSetup(BaseEmbeddingModelSetup):
    """Model name and parameters; ``model`` defaults to ``OPENAI_EMBEDDING_MODEL``, else text-embedding-3-small."""

    def __init__(self, connection: str | BaseEmbeddingModelConnection, model: str | None = None,
                 encoding_format: str | None = None, dimensions: int | None = None, user: str | None = None,
                 additional_kwargs: dict[str, Any] | None = None, **params: Any) -> None:
        model = model or os.environ.get(DEFAULT_EMBEDDING_MODEL_ENV, DEFAULT_EMBEDDING_MODEL)
        super().__init__(connection, model=model, encoding_format=encoding_format, dimensions=dimensions, user=user,
                         **(additional_kwargs or {}), **params)
