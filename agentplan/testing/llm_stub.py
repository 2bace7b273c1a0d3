"""OpenAI-compatible chat-completions stub server for tests, benchmarks, demos and load tests.

Agents talk to a model through the real ``openai`` client; this serves them ``/v1/chat/completions``
(JSON, or server-sent events when ``stream`` is set), ``/v1/embeddings`` (see stub_embeddings),
``/v1/models``, ``/healthz`` and ``/stats`` on aiohttp's low-level web server. Replies are deterministic
(same request -> same content). Latency, a random error rate, a rate limit (a token bucket answering 429
with the wait in Retry-After), slow streams and queued faults (429 with Retry-After, 500/503, a hang,
malformed JSON, a dropped connection, a full outage) are set at runtime from the test thread, and every
chat request is logged so tests can assert on what the agent sent. ``--workers N`` runs N processes on
one port (SO_REUSEPORT) for load tests.

Run standalone with ``python -m agentplan.testing.llm_stub --port 8000 [--workers N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import random
import re
import signal
import string
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from agentplan.testing.stub_embeddings import StubEmbeddings

if TYPE_CHECKING:
    from typing_extensions import Self

logger = logging.getLogger(__name__)

__all__ = ["FAULTS", "MALFORMED_CONTENT", "StubLLMServer", "StubReply", "default_responder", "main", "model_endpoint"]

#: Fault kinds accepted by :meth:`StubLLMServer.fail_next`.
FAULTS: frozenset[str] = frozenset({"429", "500", "503", "timeout", "malformed_json", "disconnect"})

MALFORMED_CONTENT = "this is not json {"
STUB_MODEL_ID = "stub-model"

_BACKLOG = 4096  # load tests open 1000+ connections at once
_START_TIMEOUT_S = 10.0
_CONTROL_TIMEOUT_S = 5.0


@dataclasses.dataclass
class StubReply:
    """What a responder wants the assistant message to contain.

    ``tool_calls`` is a list of ``(function_name, arguments)``; when non-empty the
    completion finishes with ``"tool_calls"``.
    """

    content: str | None = None
    tool_calls: list[tuple[str, dict[str, Any]]] = dataclasses.field(default_factory=list)


Responder = Callable[[dict[str, Any]], StubReply]


# --------------------------------------------------------------------------- default responder

_DECODER = json.JSONDecoder()
_TOOL_LOOP_RE = re.compile(r"\[\[tool-loop:\s*([A-Za-z0-9_.\-]+)\s*\]\]")
_TOOL_RE = re.compile(r"\[\[tool:\s*([A-Za-z0-9_.\-]+)")
_JSON_RE = re.compile(r"\[\[json(?=\s|\{|\[)")
_SENTIMENT_RE = re.compile(r"sentiment", re.IGNORECASE)
_INPUT_MARKER = "Input text:"

_POSITIVE_EN = ("love", "amazing", "best", "great", "excellent", "exceeded", "happy")
_NEGATIVE_EN = ("terrible", "broke", "disappointed", "bad", "worst", "not recommend", "lost")
_POSITIVE_ZH = ("开心", "高兴", "喜欢")
_NEGATIVE_ZH = ("丢", "难过", "糟糕")


def _english_pattern(word: str) -> re.Pattern[str]:
    """Whole-word match that tolerates simple inflections (loved, broken, badly)."""
    body = r"\s+".join(re.escape(part) for part in word.split())
    return re.compile(rf"\b{body}(?:s|d|ed|ly|ing|n)?\b", re.IGNORECASE)


_POSITIVE_PATTERNS = [_english_pattern(w) for w in _POSITIVE_EN] + [re.compile(re.escape(w)) for w in _POSITIVE_ZH]
_NEGATIVE_PATTERNS = [_english_pattern(w) for w in _NEGATIVE_EN] + [re.compile(re.escape(w)) for w in _NEGATIVE_ZH]


def _text(content: Any) -> str:
    """Plain text of a message ``content`` (string, ``None`` or a list of content parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    return str(content)


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _tool_directives(text: str) -> list[tuple[str, dict[str, Any]]]:
    """All ``[[tool:NAME {json-args}]]`` directives in ``text`` (args optional)."""
    calls: list[tuple[str, dict[str, Any]]] = []
    for match in _TOOL_RE.finditer(text):
        i = _skip_ws(text, match.end())
        args: Any = {}
        if text.startswith("{", i):
            try:
                args, i = _DECODER.raw_decode(text, i)
            except ValueError:
                continue
            if not isinstance(args, dict):
                continue
            i = _skip_ws(text, i)
        if text.startswith("]]", i):
            calls.append((match.group(1), args))
    return calls


def _json_directive(text: str) -> str | None:
    """The verbatim JSON text of the first well-formed ``[[json ...]]`` directive."""
    for match in _JSON_RE.finditer(text):
        start = _skip_ws(text, match.end())
        try:
            _, end = _DECODER.raw_decode(text, start)
        except ValueError:
            continue
        if text.startswith("]]", _skip_ws(text, end)):
            return text[start:end]
    return None


@functools.lru_cache(maxsize=4096)
def _classify_sentiment_json(text: str) -> str:
    """Benchmarks send the same few texts over and over: classify each once."""
    return json.dumps(_classify_sentiment(text), ensure_ascii=False)


def _classify_sentiment(text: str) -> dict[str, Any]:
    """Tiny word-list classifier: enough to make sentiment examples deterministic."""
    hits: list[tuple[int, str, int]] = []  # (position, matched text, +1/-1)
    for patterns, sign in ((_POSITIVE_PATTERNS, 1), (_NEGATIVE_PATTERNS, -1)):
        for pattern in patterns:
            hits.extend((m.start(), m.group(0), sign) for m in pattern.finditer(text))
    hits.sort()
    score = sum(sign for _, _, sign in hits)
    sentiment = "positive" if score > 0 else "negative" if score < 0 else "neutral"
    phrases = list(dict.fromkeys(word for _, word, _ in hits))
    if not phrases:
        words = (w.strip(string.punctuation) for w in text.split())
        phrases = [w for w in words if w][:3]
    return {"sentiment": sentiment, "confidence": 0.6 if sentiment == "neutral" else 0.9, "key_phrases": phrases}


def default_responder(request: dict[str, Any]) -> StubReply:
    """Deterministic answer for a chat request; custom responders may delegate to it.

    Rules, first match wins: ``[[tool-loop:NAME]]`` in any user message -> call NAME
    forever; last message is a tool result -> echo it as JSON; ``[[tool:NAME {args}]]``
    in the last user message (unless already answered by a tool) -> tool call(s);
    ``[[json ...]]`` -> that JSON verbatim; a prompt mentioning "sentiment" -> a
    sentiment JSON; otherwise ``"echo: " + last user content``. The ``[[json]]`` directive
    and the sentiment ``Input text:`` come from the latest user message that has them, so
    a follow-up turn (e.g. an agent re-asking after unparseable output) gets the answer again.
    """
    messages = [m for m in request.get("messages") or [] if isinstance(m, dict)]
    user_idx = [i for i, m in enumerate(messages) if m.get("role") == "user"]

    for i in reversed(user_idx):
        loop = _TOOL_LOOP_RE.search(_text(messages[i].get("content")))
        if loop:
            return StubReply(content=None, tool_calls=[(loop.group(1), {})])

    if messages and messages[-1].get("role") == "tool":
        raw = _text(messages[-1].get("content"))
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        return StubReply(content=raw if isinstance(parsed, dict) else json.dumps({"result": raw}))

    last_user = _text(messages[user_idx[-1]].get("content")) if user_idx else ""
    answered_by_tool = bool(user_idx) and any(m.get("role") == "tool" for m in messages[user_idx[-1] + 1 :])
    if not answered_by_tool:
        calls = _tool_directives(last_user)
        if calls:
            return StubReply(content=None, tool_calls=calls)
    user_texts = [_text(messages[i].get("content")) for i in reversed(user_idx)]
    for text in user_texts:
        verbatim = _json_directive(text)
        if verbatim is not None:
            return StubReply(content=verbatim)

    if any(_SENTIMENT_RE.search(_text(m.get("content"))) for m in messages):
        marked = next((t for t in user_texts if _INPUT_MARKER in t), last_user)
        _, marker, after = marked.rpartition(_INPUT_MARKER)
        content = _classify_sentiment_json((after if marker else marked).strip())
        if "reasoning" in str(request.get("model", "")):
            content = "<think>stub reasoning</think>" + content
        return StubReply(content=content)

    return StubReply(content="echo: " + last_user)


# --------------------------------------------------------------------------- response bodies


def _encode_json(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=_encode_json(payload), content_type="application/json", headers=headers)


def _error(status: int, message: str, err_type: str, code: str | None = None,
           headers: dict[str, str] | None = None) -> web.Response:
    return _json(status, {"error": {"message": message, "type": err_type, "param": None, "code": code}}, headers)


def _completion(seq: int, model: str, messages: Sequence[Any], reply: StubReply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    completion_text = reply.content or ""
    if reply.tool_calls:
        calls = []
        for i, (name, args) in enumerate(reply.tool_calls):
            arguments = json.dumps(args, ensure_ascii=False)
            completion_text += name + arguments
            calls.append({"id": f"call_{seq}_{i}", "type": "function",
                          "function": {"name": name, "arguments": arguments}})
        message["tool_calls"] = calls
    # Token counts are a character estimate: enough for usage accounting tests.
    prompt_tokens = sum(len(_text(m.get("content"))) for m in messages if isinstance(m, dict)) // 4 + 1
    completion_tokens = len(completion_text) // 4 + 1
    return {
        "id": f"chatcmpl-stub-{seq}", "object": "chat.completion", "created": int(time.time()), "model": model,
        "system_fingerprint": "llm-stub",
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": "tool_calls" if reply.tool_calls else "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def _stream_events(completion: dict[str, Any], include_usage: bool) -> list[bytes]:
    """``completion`` as server-sent ``chat.completion.chunk`` events: 16-character content deltas."""
    base = {k: completion[k] for k in ("id", "created", "model", "system_fingerprint")}
    base["object"] = "chat.completion.chunk"
    choice = completion["choices"][0]
    message = choice["message"]

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    content = message.get("content") or ""
    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": content[i : i + 16]}) for i in range(0, len(content), 16)]
    events += [chunk({"tool_calls": [{"index": i, **call}]}) for i, call in enumerate(message.get("tool_calls") or [])]
    events.append(chunk({}, choice["finish_reason"]))
    if include_usage:
        events.append({**base, "choices": [], "usage": completion["usage"]})
    return [b"data: " + _encode_json(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


def _drop(request: web.BaseRequest) -> web.Response:
    """Close the connection without an answer; aiohttp discards the returned response unsent."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=500)


# --------------------------------------------------------------------------- server


class StubLLMServer:
    """aiohttp server speaking enough of the OpenAI chat API for agents, on its own loop thread.

    Control methods (faults, latency, outage, log access) are thread-safe and meant to be called
    from the test thread while the server runs.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_ms: float = 0,
        error_rate: float = 0.0,
        seed: int = 0,
        responder: Responder | None = None,
        retry_after_s: float = 0.2,
        timeout_hang_s: float = 30.0,
        record_requests: bool = True,
        reuse_port: bool = False,
        stream_delay_ms: float = 0,
        rate_limit: float = 0,
    ) -> None:
        self._host = host
        self._port = port
        self._latency_ms = self._check_latency(latency_ms)
        self._stream_delay_ms = self._check_latency(stream_delay_ms)
        self._error_rate = self._check_rate(error_rate)
        self._rng = random.Random(seed)
        self._responder: Responder = responder or default_responder
        self.retry_after_s = float(retry_after_s)
        self.timeout_hang_s = float(timeout_hang_s)
        self._record_requests = record_requests  # off for long load tests: the log keeps every body
        self._reuse_port = reuse_port  # several stub processes share one port (``--workers``)
        self._rate_limit = 0.0  # requests/s; 0: none
        self._bucket = 0.0
        self._bucket_stamp = time.monotonic()

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self.set_rate_limit(rate_limit)
        self._faults: collections.deque[str] = collections.deque()
        self._log: list[dict[str, Any]] = []
        self._seq = 0
        self._by_status: collections.Counter[str] = collections.Counter()
        self._by_fault: collections.Counter[str] = collections.Counter()
        self._by_endpoint: collections.Counter[str] = collections.Counter()
        self._in_flight = 0
        self.embeddings = StubEmbeddings()  # /v1/embeddings: its own log and hold gate
        self._routes: dict[str, tuple[str, Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]]] = {
            "/v1/chat/completions": ("POST", self._chat), "/chat/completions": ("POST", self._chat),
            "/v1/embeddings": ("POST", self.embeddings.handle), "/embeddings": ("POST", self.embeddings.handle),
            "/v1/models": ("GET", self._models), "/models": ("GET", self._models),
            "/healthz": ("GET", self._healthz), "/stats": ("GET", self._stats),
        }

        # Loop-thread state.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread_id: int | None = None
        self._stopping: asyncio.Event | None = None
        self._runner: web.ServerRunner | None = None
        self._site: web.TCPSite | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._started = False

    @staticmethod
    def _check_latency(ms: float) -> float:
        ms = float(ms)
        if ms < 0 or math.isnan(ms):
            raise ValueError(f"latency_ms must be >= 0, got {ms}")
        return ms

    @staticmethod
    def _check_rate(rate: float) -> float:
        rate = float(rate)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"error_rate must be within [0, 1], got {rate}")
        return rate

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """Bound port (the requested one before :meth:`start`)."""
        return self._port

    @property
    def base_url(self) -> str:
        """URL to hand to ``openai.OpenAI(base_url=...)``."""
        host = "127.0.0.1" if self._host in ("", "0.0.0.0", "::", "localhost") else self._host
        return f"http://{f'[{host}]' if ':' in host else host}:{self._port}/v1"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Serve on a daemon thread; returns once the socket is accepting connections."""
        if self._started:
            raise RuntimeError("StubLLMServer can only be started once")
        self._started = True
        self._thread = threading.Thread(target=self._thread_main, name=f"llm-stub-{self._port or 'auto'}", daemon=True)
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT_S):
            self.stop()
            raise RuntimeError(f"llm stub did not start within {_START_TIMEOUT_S}s")
        if self._startup_error is not None:
            self._thread.join(_CONTROL_TIMEOUT_S)
            raise RuntimeError(f"llm stub failed to start: {self._startup_error}") from self._startup_error
        return self

    def serve_forever(self, on_ready: Callable[[StubLLMServer], None] | None = None) -> None:
        """Serve in the calling thread until SIGINT/SIGTERM or :meth:`stop` (CLI mode)."""
        if self._started:
            raise RuntimeError("StubLLMServer can only be started once")
        self._started = True
        asyncio.run(self._main(on_ready, install_signals=threading.current_thread() is threading.main_thread()))

    def stop(self, timeout: float = _CONTROL_TIMEOUT_S) -> None:
        """Close the listener and every open connection, then join the loop thread."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stopping.set)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("llm stub thread did not exit within %.1fs", timeout)

    def __enter__(self) -> Self:
        return self if self._started else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main(None, install_signals=False))
        except BaseException as exc:  # reported to start()
            if not self._ready.is_set():
                self._startup_error = exc
            else:
                logger.exception("llm stub loop crashed")
        finally:
            self._ready.set()

    async def _main(self, on_ready: Callable[[StubLLMServer], None] | None, *, install_signals: bool) -> None:
        loop = asyncio.get_running_loop()
        self._loop, self._loop_thread_id, self._stopping = loop, threading.get_ident(), asyncio.Event()
        signals = (signal.SIGINT, signal.SIGTERM) if install_signals else ()
        for sig in signals:
            loop.add_signal_handler(sig, self._stopping.set)
        # handler_cancellation: a client (or stop()) closing the connection cancels its handler, which
        # ends the latency wait or hang and keeps ``in_flight`` exact. No access log: it costs CPU per call.
        self._runner = web.ServerRunner(web.Server(self._handle, handler_cancellation=True, access_log=None),
                                        shutdown_timeout=1.0)
        await self._runner.setup()
        try:
            await self._listen()
            logger.info("llm stub listening on %s", self.base_url)
            self._ready.set()
            if on_ready is not None:
                on_ready(self)
            await self._stopping.wait()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            await self._close_listener_and_connections()
            await self._runner.cleanup()
            logger.info("llm stub on port %s stopped", self._port)

    async def _listen(self) -> None:
        assert self._runner is not None
        site = web.TCPSite(self._runner, self._host, self._port, backlog=_BACKLOG, reuse_port=self._reuse_port or None)
        await site.start()
        self._site = site
        self._port = self._runner.addresses[0][1]

    async def _close_listener_and_connections(self) -> None:
        site, self._site = self._site, None
        if site is not None:
            await site.stop()
        server = self._runner.server if self._runner is not None else None
        for conn in server.connections if server is not None else ():
            if conn.transport is not None:
                conn.transport.abort()
        # abort() closes each socket (and cancels its handler) in a callback: let those run before returning,
        # so the caller's next connect or read already sees the outage.
        await asyncio.sleep(0)

    # ------------------------------------------------------------------ outage control

    def _run_in_loop(self, coro_fn: Callable[[], Awaitable[None]]) -> None:
        loop = self._loop
        if loop is None or self._stopping is None or self._stopping.is_set():
            raise RuntimeError("llm stub is not running")

        async def run() -> None:
            await coro_fn()

        if threading.get_ident() == self._loop_thread_id:
            loop.create_task(run())  # called from a responder: cannot block the loop
            return
        asyncio.run_coroutine_threadsafe(run(), loop).result(_CONTROL_TIMEOUT_S)

    def refuse_connections(self) -> None:
        """Stop listening and drop every open connection: new connects get ECONNREFUSED."""
        self._run_in_loop(self._close_listener_and_connections)
        logger.info("llm stub on port %s refusing connections", self._port)

    def accept_connections(self) -> None:
        """Listen again on the same port after :meth:`refuse_connections`."""

        async def relisten() -> None:
            if self._site is None:
                await self._listen()

        self._run_in_loop(relisten)
        logger.info("llm stub on port %s accepting connections", self._port)

    @contextlib.contextmanager
    def outage(self) -> Iterator[StubLLMServer]:
        """``with server.outage(): ...`` - the endpoint is down inside the block."""
        self.refuse_connections()
        try:
            yield self
        finally:
            self.accept_connections()

    # ------------------------------------------------------------------ knobs

    def set_latency(self, ms: float) -> None:
        """Delay before every following chat response (and error)."""
        ms = self._check_latency(ms)
        with self._lock:
            self._latency_ms = ms

    def set_stream_delay(self, ms: float) -> None:
        """Delay between the server-sent events of every following streamed response (a slow stream)."""
        ms = self._check_latency(ms)
        with self._lock:
            self._stream_delay_ms = ms

    def set_error_rate(self, rate: float) -> None:
        """Fraction of following chat requests answered with a random 500 or 503."""
        rate = self._check_rate(rate)
        with self._lock:
            self._error_rate = rate

    def set_rate_limit(self, per_s: float) -> None:
        """Answer 429 (``Retry-After``: the wait for the next free slot) above ``per_s`` requests/s, over
        all clients of this process; 0 turns it off. The bucket holds one second's worth, as a
        provider's per-minute limit allows bursts."""
        per_s = float(per_s)
        if per_s < 0 or math.isnan(per_s):
            raise ValueError(f"rate_limit must be >= 0, got {per_s}")
        with self._lock:
            self._rate_limit = per_s
            self._bucket = self._bucket_capacity()
            self._bucket_stamp = time.monotonic()

    def _bucket_capacity(self) -> float:
        return max(1.0, self._rate_limit)

    def _rate_limited_for(self) -> float:
        """0 if a slot is free (and takes it), else the seconds until one is; under the lock."""
        now = time.monotonic()
        self._bucket = min(self._bucket_capacity(), self._bucket + (now - self._bucket_stamp) * self._rate_limit)
        self._bucket_stamp = now
        if self._bucket >= 1.0:
            self._bucket -= 1.0
            return 0.0
        return (1.0 - self._bucket) / self._rate_limit

    def fail_next(self, n: int, fault: str) -> None:
        """Apply ``fault`` to the next ``n`` chat requests, in arrival order."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {sorted(FAULTS)}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        with self._lock:
            self._faults.extend([fault] * n)

    def clear_faults(self) -> None:
        """Drop queued faults that have not been applied yet."""
        with self._lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> list[str]:
        with self._lock:
            return list(self._faults)

    # ------------------------------------------------------------------ request log

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Copy of the chat request log (one dict per request, arrival order)."""
        with self._lock:
            return [dict(entry) for entry in self._log]

    @property
    def request_count(self) -> int:
        """Entries in the log (reset by :meth:`clear_log`; ``seq`` keeps counting)."""
        with self._lock:
            return len(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def count_matching(self, substring: str, *, ok_only: bool = True) -> int:
        """Logged requests (status 200 only, unless ``ok_only=False``) mentioning ``substring``."""
        with self._lock:
            entries = list(self._log)
        return sum(1 for e in entries if (not ok_only or e["status"] == 200)
                   and any(isinstance(m, dict) and substring in _text(m.get("content")) for m in e["messages"]))

    def wait_for_requests(self, n: int, timeout: float) -> bool:
        """Block until the log holds at least ``n`` requests; ``False`` on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._log) >= n, timeout)

    def stats(self) -> dict[str, Any]:
        """Counters served at ``GET /stats``."""
        server = self._runner.server if self._runner is not None else None
        with self._lock:
            return {
                "pid": os.getpid(),  # tells apart the processes of ``--workers N``
                "chat_requests": sum(self._by_status.values()),
                "by_status": dict(self._by_status),
                "by_fault": dict(self._by_fault),
                "by_endpoint": dict(self._by_endpoint),
                "in_flight": self._in_flight,
                "open_connections": len(server.connections) if server is not None else 0,
                "pending_faults": len(self._faults),
                "latency_ms": self._latency_ms,
                "error_rate": self._error_rate,
                "rate_limit": self._rate_limit,
            }

    # ------------------------------------------------------------------ handlers

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        with self._lock:
            self._by_endpoint[f"{request.method} {path}"] += 1
        route = self._routes.get(path)
        if route is None:
            return _error(404, f"Invalid URL ({request.method} {path})", "invalid_request_error")
        method, handler = route
        if request.method != method:
            return _error(405, f"Method {request.method} not allowed on {path}", "invalid_request_error",
                          headers={"Allow": method})
        return await handler(request)

    async def _models(self, request: web.BaseRequest) -> web.StreamResponse:
        return _json(200, {"object": "list",
                           "data": [{"id": STUB_MODEL_ID, "object": "model", "created": 0, "owned_by": "llm-stub"}]})

    async def _healthz(self, request: web.BaseRequest) -> web.StreamResponse:
        return _json(200, {"status": "ok"})

    async def _stats(self, request: web.BaseRequest) -> web.StreamResponse:
        return _json(200, self.stats())

    def _record(self, entry: dict[str, Any]) -> None:
        with self._cond:
            if self._record_requests:
                self._log.append(entry)
            self._by_status[str(entry["status"])] += 1
            if entry["fault"]:
                self._by_fault[entry["fault"]] += 1
            self._cond.notify_all()

    async def _chat(self, request: web.BaseRequest) -> web.StreamResponse:
        with self._lock:
            self._in_flight += 1
        try:
            return await self._answer_chat(request)
        finally:  # also when the connection closes under a waiting request
            with self._lock:
                self._in_flight -= 1

    async def _answer_chat(self, request: web.BaseRequest) -> web.StreamResponse:
        raw_body = await request.content.read()  # the stream has no size cap: long conversations pass
        # Sequence number, fault and latency are fixed at arrival so that queued faults map onto
        # requests in the order the server received them.
        with self._lock:
            self._seq += 1
            seq = self._seq
            latency_s, stream_delay_s = self._latency_ms / 1000.0, self._stream_delay_ms / 1000.0
        try:
            body = json.loads(raw_body)
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                raise TypeError("body must be a JSON object with a 'messages' list")
        except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            self._record({"seq": seq, "model": "", "messages": [], "tools": None, "response_format": None,
                          "fault": None, "status": 400})
            return _error(400, f"Invalid request body: {exc}", "invalid_request_error")
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
            if fault is None and self._error_rate > 0 and self._rng.random() < self._error_rate:
                fault = self._rng.choice(("500", "503"))
            retry_after_s = self.retry_after_s
            if fault is None and self._rate_limit > 0:
                wait_s = self._rate_limited_for()
                if wait_s > 0:
                    fault, retry_after_s = "rate_limit", wait_s

        model = str(body.get("model", ""))
        reply: StubReply | None = None
        status = 200
        if fault in ("429", "500", "503"):
            status = int(fault)
        elif fault == "rate_limit":
            status = 429
        elif fault in ("timeout", "disconnect"):
            status = 0  # no HTTP response is ever sent
        elif fault == "malformed_json":
            reply = StubReply(content=MALFORMED_CONTENT)
        else:
            try:
                answer = self._responder(body)
                reply = StubReply(content=answer) if isinstance(answer, str) else answer
                if not isinstance(reply, StubReply):
                    raise TypeError(f"responder returned {type(answer).__name__}, not StubReply")
            except Exception:  # surfaced to the client as a 500
                logger.exception("llm stub responder failed for request %d", seq)
                status = 500
        self._record({"seq": seq, "model": model, "messages": body["messages"], "tools": body.get("tools"),
                      "response_format": body.get("response_format"), "fault": fault, "status": status})

        if fault == "timeout":
            await asyncio.sleep(self.timeout_hang_s)  # cut short when the client or stop() closes the connection
            return _drop(request)
        if latency_s > 0 and fault != "rate_limit":  # a rate limiter refuses at once
            await asyncio.sleep(latency_s)
        if fault == "disconnect":
            return _drop(request)
        request_id = {"x-request-id": f"req_stub_{seq}"}
        if status == 429:
            headers = {"Retry-After": str(math.ceil(retry_after_s)),
                       "retry-after-ms": str(max(1, round(retry_after_s * 1000))), **request_id}
            return _error(429, "Rate limit reached (injected by llm stub).", "requests", "rate_limit_exceeded",
                          headers)
        if status != 200 or reply is None:
            message = ("The server is overloaded or not ready yet (llm stub)." if status == 503
                       else "The server had an error while processing your request (llm stub).")
            return _error(status, message, "server_error", headers=request_id)

        completion = _completion(seq, model, body["messages"], reply)
        if not body.get("stream"):
            return _json(200, completion, request_id)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        events = _stream_events(completion, include_usage)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                               **request_id})
        await response.prepare(request)
        if stream_delay_s > 0:
            for event in events:
                await asyncio.sleep(stream_delay_s)
                await response.write(event)
        else:
            await response.write(b"".join(events))  # one write: streaming costs no more than JSON
        await response.write_eof()
        return response


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stub in the foreground until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m agentplan.testing.llm_stub",
                                     description="OpenAI-compatible chat-completions stub server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--stream-delay-ms", type=float, default=0.0, help="delay between streamed events")
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--rate-limit", type=float, default=0.0,
                        help="requests/s answered; above it 429 with Retry-After (per process; 0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes sharing the port (SO_REUSEPORT); fault control stays per process")
    parser.add_argument("--no-request-log", action="store_true",
                        help="keep counters only, not every request body (long load tests)")
    parser.add_argument("--parent-pid", type=int, default=0, help=argparse.SUPPRESS)  # set for --workers' extras
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.parent_pid:
        _die_with_parent(args.parent_pid)
    try:
        server = StubLLMServer(host=args.host, port=args.port, latency_ms=args.latency_ms,
                               stream_delay_ms=args.stream_delay_ms, error_rate=args.error_rate, seed=args.seed,
                               rate_limit=args.rate_limit,
                               record_requests=not args.no_request_log,
                               reuse_port=bool(args.parent_pid) or args.workers > 1)
    except ValueError as exc:
        parser.error(str(exc))
    children: list[subprocess.Popen[bytes]] = []

    def announce(srv: StubLLMServer) -> None:
        # Extra processes bind the port this one got; the ready line waits for all of them.
        children.extend(_start_child(argv, srv.port) for _ in range(args.workers - 1))
        suffix = f" ({args.workers} processes)" if children else ""
        print(f"llm-stub listening on {srv.base_url}{suffix}", flush=True)

    try:
        server.serve_forever(on_ready=announce)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"llm-stub: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    finally:
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(_CONTROL_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.kill()
    return 0


def _start_child(argv: Sequence[str] | None, port: int) -> subprocess.Popen[bytes]:
    """One more stub process on ``port``; it exits with its parent (Linux) and is ready on return."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = [sys.executable, "-m", "agentplan.testing.llm_stub", *args, "--port", str(port), "--workers", "1",
               "--parent-pid", str(os.getpid())]
    child = subprocess.Popen(command, stdout=subprocess.PIPE)
    assert child.stdout is not None
    line = child.stdout.readline()
    if b"listening" not in line:
        child.kill()
        raise OSError(f"stub worker process failed to start: {line!r}")
    child.stdout.close()
    return child


def _die_with_parent(parent_pid: int) -> None:
    """PR_SET_PDEATHSIG: a SIGKILLed parent must not leave stub processes behind (Linux only).

    Set by the child itself rather than in ``preexec_fn``, which is unsafe in a threaded parent."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        sys.exit(0)


@contextlib.contextmanager
def model_endpoint() -> Iterator[str]:
    """The OpenAI-compatible endpoint examples should use: ``OPENAI_BASE_URL`` when set,
    else a stub started for the duration (and ``OPENAI_BASE_URL``/``OPENAI_API_KEY`` pointed at it)."""
    configured = os.environ.get("OPENAI_BASE_URL")
    if configured:
        yield configured
        return
    with StubLLMServer() as stub:
        os.environ["OPENAI_BASE_URL"] = stub.base_url
        os.environ.setdefault("OPENAI_API_KEY", "stub-key")
        try:
            yield stub.base_url
        finally:
            os.environ.pop("OPENAI_BASE_URL", None)


if __name__ == "__main__":
    sys.exit(main())
