"""``/v1/embeddings`` of the LLM stub: deterministic bag-of-words vectors, a request log and a hold gate.

A text's vector is the normalised sum of one signed unit per word (lower-cased ``\\w+`` tokens),
each word hashed to a dimension with BLAKE2b: stable across processes and runs, and texts sharing
words are near each other, so tests can assert nearest neighbours. ``dimensions`` in the request
sets the size (default 256).

Tests count requests per input text (:meth:`StubEmbeddings.count`) to prove that a committed
embedding call is never repeated, and :meth:`StubEmbeddings.hold` keeps requests for matching
texts unanswered (the client waits) until :meth:`StubEmbeddings.release`, to kill a worker while
a call is in flight.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import threading
from typing import Any

from aiohttp import web

DEFAULT_DIMENSIONS = 256
_WORD = re.compile(r"\w+")


def hash_embedding(text: str, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """The stub's vector of ``text`` (length 1, or all zeros for a text without words)."""
    vector = [0.0] * dimensions
    for word in _WORD.findall(text.lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        vector[value % dimensions] += 1.0 if (value >> 63) & 1 else -1.0
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else vector


def _reply(status: int, payload: Any) -> web.Response:
    return web.Response(status=status, body=json.dumps(payload).encode(), content_type="application/json")


def _bad_request(message: str) -> web.Response:
    return _reply(400, {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}})


class StubEmbeddings:
    """State and handler of the stub's embeddings endpoint; thread-safe control from tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._log: list[dict[str, Any]] = []
        self._held: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._released: asyncio.Event | None = None
        self._waiting: list[object] = []

    # -- control (test thread) ---------------------------------------------------------------------
    @property
    def requests(self) -> list[dict[str, Any]]:
        """One entry per request: ``{"model", "input": [texts], "status"}`` (held ones once answered)."""
        with self._lock:
            return [dict(entry) for entry in self._log]

    def count(self, text: str) -> int:
        """Answered requests whose input includes exactly ``text``."""
        with self._lock:
            return sum(1 for entry in self._log if entry["status"] == 200 and text in entry["input"])

    def hold(self, substring: str) -> None:
        """Leave requests with an input containing ``substring`` unanswered until :meth:`release`."""
        with self._lock:
            self._held.append(substring)

    def held_count(self) -> int:
        """Requests waiting at the gate now."""
        with self._lock:
            return len(self._waiting)

    def release(self) -> None:
        """Answer held requests and hold nothing from now on."""
        with self._lock:
            self._held.clear()
            loop, released = self._loop, self._released
            self._released = None
        if loop is not None and released is not None:
            loop.call_soon_threadsafe(released.set)

    # -- handler (stub loop) -----------------------------------------------------------------------
    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            body = json.loads(await request.content.read())
            texts = body["input"]
            if isinstance(texts, str):
                texts = [texts]
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                raise TypeError("'input' must be a string or a list of strings")
            dimensions = int(body.get("dimensions") or DEFAULT_DIMENSIONS)
            if dimensions < 1:
                raise ValueError("'dimensions' must be >= 1")
        except (ValueError, TypeError, KeyError) as exc:
            return _bad_request(f"Invalid embeddings request: {exc!r}")
        model = str(body.get("model", ""))
        await self._gate(texts)
        with self._lock:
            self._log.append({"model": model, "input": texts, "status": 200})
        data = [{"object": "embedding", "index": i, "embedding": hash_embedding(t, dimensions)}
                for i, t in enumerate(texts)]
        tokens = sum(len(_WORD.findall(t)) for t in texts)
        return _reply(200, {"object": "list", "data": data, "model": model,
                            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def _gate(self, texts: list[str]) -> None:
        marker = object()
        with self._lock:
            if not any(h in t for h in self._held for t in texts):
                return
            if self._released is None:
                self._loop, self._released = asyncio.get_running_loop(), asyncio.Event()
            released = self._released
            self._waiting.append(marker)
        try:
            await released.wait()  # cancelled when the client closes the connection
        finally:
            with self._lock:
                self._waiting.remove(marker)

