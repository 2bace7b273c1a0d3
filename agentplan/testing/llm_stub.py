"""OpenAI-compatible chat-completions stub server for tests, benchmarks and local runs.

Real agents talk to an LLM through the ``openai`` client (httpx, pooled keep-alive
connections). To exercise that exact code path without a network model, this module
serves ``/v1/chat/completions`` over a small HTTP/1.1 implementation on asyncio protocols:
a reply that needs no waiting is written straight from ``data_received`` (no task, no
stream reader), and a delayed one costs a timer, so thousands of concurrent slow requests
are cheap. ``--workers N`` runs N processes on one port (SO_REUSEPORT) for benchmarks.

Replies are deterministic (same request -> same content), latency and random errors
are tunable at runtime, and faults (429/500/503, hangs, malformed JSON, dropped
connections, a full outage) can be queued from the test thread to check retry and
recovery behaviour. Every chat request is logged so tests can assert on what the
agent actually sent.

Run standalone with ``python -m agentplan.testing.llm_stub --port 8000 [--workers N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import functools
import http
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
from collections.abc import Callable, Iterator, Sequence
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "FAULTS",
    "StubLLMServer",
    "StubReply",
    "default_responder",
    "main",
]

#: Fault kinds accepted by :meth:`StubLLMServer.fail_next`.
FAULTS: frozenset[str] = frozenset({"429", "500", "503", "timeout", "malformed_json", "disconnect"})

MALFORMED_CONTENT = "this is not json {"
STUB_MODEL_ID = "stub-model"

_CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
_MODELS_PATHS = frozenset({"/v1/models", "/models"})
_MAX_BODY_BYTES = 64 * 1024 * 1024
_STREAM_LIMIT = 1024 * 1024  # max header block size accepted by the reader
_BACKLOG = 4096  # large accept queue: benchmarks open 1000+ connections at once
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


_POSITIVE_PATTERNS = [_english_pattern(w) for w in _POSITIVE_EN] + [
    re.compile(re.escape(w)) for w in _POSITIVE_ZH
]
_NEGATIVE_PATTERNS = [_english_pattern(w) for w in _NEGATIVE_EN] + [
    re.compile(re.escape(w)) for w in _NEGATIVE_ZH
]


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
            for m in pattern.finditer(text):
                hits.append((m.start(), m.group(0), sign))
    hits.sort()
    score = sum(sign for _, _, sign in hits)
    sentiment = "positive" if score > 0 else "negative" if score < 0 else "neutral"
    phrases: list[str] = []
    for _, word, _ in hits:
        if word not in phrases:
            phrases.append(word)
    if not phrases:
        words = (w.strip(string.punctuation) for w in text.split())
        phrases = [w for w in words if w][:3]
    return {
        "sentiment": sentiment,
        "confidence": 0.6 if sentiment == "neutral" else 0.9,
        "key_phrases": phrases,
    }


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
    answered_by_tool = bool(user_idx) and any(
        m.get("role") == "tool" for m in messages[user_idx[-1] + 1 :]
    )
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
        text = (after if marker else marked).strip()
        content = _classify_sentiment_json(text)
        if "reasoning" in str(request.get("model", "")):
            content = "<think>stub reasoning</think>" + content
        return StubReply(content=content)

    return StubReply(content="echo: " + last_user)


# --------------------------------------------------------------------------- HTTP framing


class _BadRequest(Exception):
    """Unparseable HTTP framing; answered with ``status`` and the connection is closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass
class _HttpRequest:
    method: str
    path: str
    version: str
    headers: dict[str, str]
    body: bytes

    @property
    def keep_alive(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in conn
        return "close" not in conn


def _error_body(message: str, err_type: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": err_type, "param": None, "code": code}}


def _encode_json(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


_REASONS = {status.value: status.phrase for status in http.HTTPStatus}


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
    lines.extend(f"{k}: {v}" for k, v in headers.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# The common answer (200, JSON, keep-alive) is a template: formatting it is most of a fast reply.
_OK_JSON_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
    b"Connection: keep-alive\r\nx-request-id: req_stub_%d\r\n\r\n"
)


def _parse_head(block: bytes) -> tuple[str, str, str, dict[str, str]]:
    lines = block.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(400, "malformed request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise _BadRequest(400, "malformed header line")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return parts[0], parts[1], parts[2], headers


def _chunked_body(buf: bytearray, start: int) -> tuple[bytes, int] | None:
    """Decode a ``Transfer-Encoding: chunked`` body at ``start``: (body, end) or ``None`` if incomplete.

    Trailers are discarded.
    """
    body = bytearray()
    i = start
    while True:
        eol = buf.find(b"\r\n", i)
        if eol < 0:
            return None
        try:
            size = int(bytes(buf[i:eol]).split(b";", 1)[0].strip(), 16)
        except ValueError as exc:
            raise _BadRequest(400, "invalid chunk size") from exc
        i = eol + 2
        if size == 0:
            while True:
                eol = buf.find(b"\r\n", i)
                if eol < 0:
                    return None
                if eol == i:
                    return bytes(body), eol + 2
                i = eol + 2
        if len(body) + size > _MAX_BODY_BYTES:
            raise _BadRequest(413, "request body too large")
        if len(buf) < i + size + 2:
            return None
        body += buf[i : i + size]
        if buf[i + size : i + size + 2] != b"\r\n":
            raise _BadRequest(400, "invalid chunk terminator")
        i += size + 2


class _RequestParser:
    """Incremental HTTP/1.1 request framing over the bytes of one connection (pipelining allowed)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        # (method, target, version, headers, body start, content length or -1 when chunked)
        self._head: tuple[str, str, str, dict[str, str], int, int] | None = None

    @property
    def partial(self) -> bool:
        """Bytes of an unfinished request are buffered (a clean close has none)."""
        return self._head is not None or bool(self._buf.strip())

    def feed(self, data: bytes) -> list[_HttpRequest]:
        """Complete requests now available; raises :class:`_BadRequest` on broken framing."""
        self._buf += data
        requests = []
        while True:
            request = self._next()
            if request is None:
                return requests
            requests.append(request)

    def _next(self) -> _HttpRequest | None:
        buf = self._buf
        if self._head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0 or end > _STREAM_LIMIT:
                if len(buf) > _STREAM_LIMIT:
                    raise _BadRequest(431, "request header block too large")
                return None
            method, target, version, headers = _parse_head(bytes(buf[:end]))
            if "chunked" in headers.get("transfer-encoding", "").lower():
                length = -1
            else:
                try:
                    length = int(headers.get("content-length", "0") or "0")
                except ValueError as exc:
                    raise _BadRequest(400, "invalid Content-Length") from exc
                if length < 0:
                    raise _BadRequest(400, "invalid Content-Length")
                if length > _MAX_BODY_BYTES:
                    raise _BadRequest(413, "request body too large")
            self._head = (method, target, version, headers, end + 4, length)
        method, target, version, headers, start, length = self._head
        if length >= 0:
            stop = start + length
            if len(buf) < stop:
                return None
            body = bytes(buf[start:stop])
        else:
            decoded = _chunked_body(buf, start)
            if decoded is None:
                return None
            body, stop = decoded
        del buf[:stop]
        self._head = None
        path = target.split("?", 1)[0]
        if len(path) > 1:
            path = path.rstrip("/")
        return _HttpRequest(method.upper(), path, version, headers, body)


@dataclasses.dataclass
class _Reply:
    """How to answer one request: bytes to write (``None``: close without answering), when, and then
    whether to keep the connection."""

    data: bytes | None
    keep_alive: bool
    delay_s: float = 0.0
    hang: bool = False  # hold the request unanswered, then close (the "timeout" fault)
    chat: bool = False  # counted in ``in_flight`` until answered

    @property
    def immediate(self) -> bool:
        return self.delay_s <= 0 and not self.hang


class _Connection(asyncio.Protocol):
    """One client connection. Replies that need no waiting are written from ``data_received``
    itself; a delayed or hanging reply moves the rest of the connection's queue to a task, so
    responses keep request order."""

    def __init__(self, server: StubLLMServer) -> None:
        self._server = server
        self._parser = _RequestParser()
        self._queue: collections.deque[_HttpRequest | _BadRequest] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None  # a hanging reply
        self._timer: asyncio.TimerHandle | None = None  # a delayed reply
        self._delayed: _Reply | None = None
        self._closed = False
        self._eof = False
        self._wake: asyncio.Future[None] | None = None

    # -- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._server._connection_opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._server._connection_closed(self)
        self._wake_up()
        self._cancel_pending()

    def data_received(self, data: bytes) -> None:
        self._wake_up()
        if self._closed:
            return
        try:
            self._queue.extend(self._parser.feed(data))
        except _BadRequest as exc:
            self._queue.append(exc)
            self._parser = _RequestParser()
        self._pump()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_up()
        if self._parser.partial:
            self._queue.append(_BadRequest(400, "truncated request head"))
        self._pump()
        return True  # keep the transport open until queued replies are written

    # -- replying
    @property
    def _waiting(self) -> bool:
        return self.task is not None or self._timer is not None

    def _pump(self) -> None:
        while not self._waiting and self._queue and not self._closed:
            reply = self._server._answer(self._queue.popleft())
            if reply.hang:
                self.task = asyncio.get_running_loop().create_task(self._hang_then_close(reply))
                return
            if reply.delay_s > 0:
                # A timer, not a task: thousands of delayed replies must stay cheap.
                self._delayed = reply
                self._timer = asyncio.get_running_loop().call_later(reply.delay_s, self._send_delayed)
                return
            if not self._send(reply):
                return
        if self._eof and not self._waiting and not self._queue:
            self.close()

    def _send_delayed(self) -> None:
        reply, self._delayed, self._timer = self._delayed, None, None
        if reply is not None and self._send(reply):
            self._pump()

    def _cancel_pending(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        reply, self._delayed = self._delayed, None
        if reply is not None and reply.chat:
            reply.chat = False
            self._server._chat_done()
        if self.task is not None:
            self.task.cancel()

    def _send(self, reply: _Reply) -> bool:
        """Write ``reply``; ``False`` when the connection is closed after it."""
        if reply.chat:
            self._server._chat_done()
            reply.chat = False
        assert self.transport is not None
        if reply.data is not None and not self._closed:
            self.transport.write(reply.data)
        if reply.data is None or not reply.keep_alive:
            self.close()
            return False
        return True

    async def _hang_then_close(self, reply: _Reply) -> None:
        try:
            await self._hang()
            reply.data = None
            self._send(reply)
        except asyncio.CancelledError:
            pass  # connection lost or server stopping
        finally:
            if reply.chat:
                reply.chat = False
                self._server._chat_done()
            self.task = None

    async def _hang(self) -> None:
        """Until timeout_hang_s, the client sending anything or closing, or stop()."""
        stopping = self._server._stopping
        assert stopping is not None
        self._wake = asyncio.get_running_loop().create_future()
        stopped = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({self._wake, stopped}, timeout=self._server.timeout_hang_s,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            self._wake = None

    def _wake_up(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def close(self) -> None:
        self._closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self._closed = True
        if self.transport is not None:
            self.transport.abort()
        self._cancel_pending()


# --------------------------------------------------------------------------- server


class StubLLMServer:
    """Asyncio HTTP/1.1 server speaking enough of the OpenAI chat API for agents.

    Control methods (faults, latency, outage, log access) are thread-safe and meant
    to be called from the test thread while the server runs on its own loop thread.
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
    ) -> None:
        self._host = host
        self._port = port
        self._latency_ms = self._check_latency(latency_ms)
        self._error_rate = self._check_rate(error_rate)
        self._rng = random.Random(seed)
        self._responder: Responder = responder or default_responder
        self.retry_after_s = float(retry_after_s)
        self.timeout_hang_s = float(timeout_hang_s)
        # Off for long benchmarks: the log keeps every request body. Counters still count.
        self._record_requests = record_requests
        # SO_REUSEPORT lets several stub processes share one port (``--workers``).
        self._reuse_port = reuse_port

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._faults: collections.deque[str] = collections.deque()
        self._log: list[dict[str, Any]] = []
        self._seq = 0
        self._by_status: collections.Counter[str] = collections.Counter()
        self._by_fault: collections.Counter[str] = collections.Counter()
        self._by_endpoint: collections.Counter[str] = collections.Counter()
        self._in_flight = 0

        # Loop-thread state (only touched from the server's event loop).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread_id: int | None = None
        self._stopping: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self._conns: dict[_Connection, None] = {}

        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._started = False

    # ------------------------------------------------------------------ validation

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

    # ------------------------------------------------------------------ properties

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
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self._port}/v1"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> StubLLMServer:
        """Serve on a daemon thread; returns once the socket is accepting connections."""
        if self._started:
            raise RuntimeError("StubLLMServer can only be started once")
        self._started = True
        self._thread = threading.Thread(
            target=self._thread_main, name=f"llm-stub-{self._port or 'auto'}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT_S):
            self.stop()
            raise RuntimeError(f"llm stub did not start within {_START_TIMEOUT_S}s")
        if self._startup_error is not None:
            self._thread.join(_CONTROL_TIMEOUT_S)
            raise RuntimeError(f"llm stub failed to start: {self._startup_error}") from (
                self._startup_error
            )
        return self

    def serve_forever(self, on_ready: Callable[[StubLLMServer], None] | None = None) -> None:
        """Serve in the calling thread until SIGINT/SIGTERM or :meth:`stop` (CLI mode)."""
        if self._started:
            raise RuntimeError("StubLLMServer can only be started once")
        self._started = True
        install = threading.current_thread() is threading.main_thread()
        asyncio.run(self._main(on_ready=on_ready, install_signals=install))

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

    def __enter__(self) -> StubLLMServer:
        return self if self._started else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main(on_ready=None, install_signals=False))
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            if not self._ready.is_set():
                self._startup_error = exc
            else:
                logger.exception("llm stub loop crashed")
        finally:
            self._ready.set()

    async def _main(
        self, *, on_ready: Callable[[StubLLMServer], None] | None, install_signals: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._loop_thread_id = threading.get_ident()
        self._loop = loop
        signals = (signal.SIGINT, signal.SIGTERM) if install_signals else ()
        for sig in signals:
            loop.add_signal_handler(sig, self._stopping.set)
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
            logger.info("llm stub on port %s stopped", self._port)

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self),
            host=self._host,
            port=self._port,
            reuse_address=True,
            reuse_port=self._reuse_port or None,
            backlog=_BACKLOG,
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def _close_listener_and_connections(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        current = asyncio.current_task()
        with self._lock:
            conns = list(self._conns)
        tasks: list[asyncio.Task[Any]] = []
        for conn in conns:
            task = conn.task
            conn.abort()
            if task is not None and task is not current:
                tasks.append(task)
        if tasks:
            await asyncio.wait(tasks, timeout=_CONTROL_TIMEOUT_S)
        if server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), _CONTROL_TIMEOUT_S)

    # ------------------------------------------------------------------ outage control

    def _run_in_loop(self, coro_fn: Callable[[], Any]) -> None:
        loop = self._loop
        if loop is None or self._stopping is None or self._stopping.is_set():
            raise RuntimeError("llm stub is not running")
        if threading.get_ident() == self._loop_thread_id:
            loop.create_task(coro_fn())  # called from a responder: cannot block the loop
            return
        asyncio.run_coroutine_threadsafe(coro_fn(), loop).result(_CONTROL_TIMEOUT_S)

    def refuse_connections(self) -> None:
        """Stop listening and drop every open connection: new connects get ECONNREFUSED."""
        self._run_in_loop(self._close_listener_and_connections)
        logger.info("llm stub on port %s refusing connections", self._port)

    def accept_connections(self) -> None:
        """Listen again on the same port after :meth:`refuse_connections`."""

        async def relisten() -> None:
            if self._server is None:
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
        """Delay applied to every following chat response (non-blocking sleep)."""
        ms = self._check_latency(ms)
        with self._lock:
            self._latency_ms = ms

    def set_error_rate(self, rate: float) -> None:
        """Fraction of following chat requests answered with a random 500 or 503."""
        rate = self._check_rate(rate)
        with self._lock:
            self._error_rate = rate

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
        return sum(
            1
            for e in entries
            if (not ok_only or e["status"] == 200)
            and any(
                isinstance(m, dict) and substring in _text(m.get("content")) for m in e["messages"]
            )
        )

    def wait_for_requests(self, n: int, timeout: float) -> bool:
        """Block until the log holds at least ``n`` requests; ``False`` on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._log) >= n, timeout)

    def stats(self) -> dict[str, Any]:
        """Counters served at ``GET /stats``."""
        with self._lock:
            return {
                "pid": os.getpid(),  # tells apart the processes of ``--workers N``
                "chat_requests": sum(self._by_status.values()),
                "by_status": dict(self._by_status),
                "by_fault": dict(self._by_fault),
                "by_endpoint": dict(self._by_endpoint),
                "in_flight": self._in_flight,
                "open_connections": len(self._conns),
                "pending_faults": len(self._faults),
                "latency_ms": self._latency_ms,
                "error_rate": self._error_rate,
            }

    # ------------------------------------------------------------------ connection handling

    # ------------------------------------------------------------------ connection handling

    def _connection_opened(self, conn: _Connection) -> None:
        with self._lock:
            self._conns[conn] = None

    def _connection_closed(self, conn: _Connection) -> None:
        with self._lock:
            self._conns.pop(conn, None)

    def _chat_done(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _answer(self, item: _HttpRequest | _BadRequest) -> _Reply:
        """How to answer one request (runs on the loop, in request order per connection)."""
        if isinstance(item, _BadRequest):
            return self._json_reply(item.status, _error_body(str(item), "invalid_request_error"), keep_alive=False)
        req = item
        keep = req.keep_alive
        with self._lock:
            self._by_endpoint[f"{req.method} {req.path}"] += 1
        if req.path in _CHAT_PATHS:
            if req.method != "POST":
                return self._method_not_allowed(req, "POST", keep)
            with self._lock:
                self._in_flight += 1
            try:
                reply = self._chat(req)
            except BaseException:
                self._chat_done()
                raise
            reply.chat = True  # _Connection counts it done once answered
            return reply
        if req.path in _MODELS_PATHS:
            if req.method != "GET":
                return self._method_not_allowed(req, "GET", keep)
            payload = {
                "object": "list",
                "data": [
                    {"id": STUB_MODEL_ID, "object": "model", "created": 0, "owned_by": "llm-stub"}
                ],
            }
            return self._json_reply(200, payload, keep_alive=keep)
        if req.path == "/healthz":
            return self._json_reply(200, {"status": "ok"}, keep_alive=keep)
        if req.path == "/stats":
            return self._json_reply(200, self.stats(), keep_alive=keep)
        return self._json_reply(
            404,
            _error_body(f"Invalid URL ({req.method} {req.path})", "invalid_request_error"),
            keep_alive=keep,
        )

    def _method_not_allowed(self, req: _HttpRequest, allow: str, keep: bool) -> _Reply:
        message = f"Method {req.method} not allowed on {req.path}"
        body = _error_body(message, "invalid_request_error")
        return self._json_reply(405, body, keep_alive=keep, headers={"Allow": allow})

    @staticmethod
    def _json_reply(
        status: int,
        payload: Any,
        *,
        keep_alive: bool,
        headers: dict[str, str] | None = None,
        delay_s: float = 0.0,
    ) -> _Reply:
        body = _encode_json(payload)
        all_headers = {
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
            "Connection": "keep-alive" if keep_alive else "close",
            **(headers or {}),
        }
        return _Reply(_head(status, all_headers) + body, keep_alive, delay_s)

    # ------------------------------------------------------------------ chat completions

    def _record(self, entry: dict[str, Any]) -> None:
        with self._cond:
            if self._record_requests:
                self._log.append(entry)
            self._by_status[str(entry["status"])] += 1
            if entry["fault"]:
                self._by_fault[entry["fault"]] += 1
            self._cond.notify_all()

    def _chat(self, req: _HttpRequest) -> _Reply:
        keep = req.keep_alive
        try:
            body = json.loads(req.body)
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                raise ValueError("body must be a JSON object with a 'messages' list")
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError included
            with self._lock:
                self._seq += 1
                seq = self._seq
            self._record(
                {"seq": seq, "model": "", "messages": [], "tools": None,
                 "response_format": None, "fault": None, "status": 400}  # fmt: skip
            )
            err = _error_body(f"Invalid request body: {exc}", "invalid_request_error")
            return self._json_reply(400, err, keep_alive=keep)

        # Sequence number, fault and latency are fixed at arrival so that queued
        # faults map onto requests in the order the server received them.
        with self._lock:
            self._seq += 1
            seq = self._seq
            fault = self._faults.popleft() if self._faults else None
            if fault is None and self._error_rate > 0 and self._rng.random() < self._error_rate:
                fault = self._rng.choice(("500", "503"))
            latency_s = self._latency_ms / 1000.0

        model = str(body.get("model", ""))
        reply: StubReply | None = None
        status = 200
        if fault in ("429", "500", "503"):
            status = int(fault)
        elif fault in ("timeout", "disconnect"):
            status = 0  # no HTTP response is ever sent
        elif fault == "malformed_json":
            reply = StubReply(content=MALFORMED_CONTENT)
        else:
            try:
                raw = self._responder(body)
                reply = StubReply(content=raw) if isinstance(raw, str) else raw
                if not isinstance(reply, StubReply):
                    raise TypeError(f"responder returned {type(raw).__name__}, not StubReply")
            except Exception:  # noqa: BLE001 - surfaced to the client as a 500
                logger.exception("llm stub responder failed for request %d", seq)
                status = 500
        self._record(
            {
                "seq": seq,
                "model": model,
                "messages": body["messages"],
                "tools": body.get("tools"),
                "response_format": body.get("response_format"),
                "fault": fault,
                "status": status,
            }
        )

        if fault == "timeout":
            return _Reply(None, False, hang=True)
        if fault == "disconnect":
            return _Reply(None, False, delay_s=latency_s)
        if status == 429:
            headers = {
                "Retry-After": str(math.ceil(self.retry_after_s)),
                "retry-after-ms": str(int(round(self.retry_after_s * 1000))),
                "x-request-id": f"req_stub_{seq}",
            }
            err = _error_body(
                "Rate limit reached (injected by llm stub).", "requests", "rate_limit_exceeded"
            )
            return self._json_reply(429, err, keep_alive=keep, headers=headers, delay_s=latency_s)
        if status != 200 or reply is None:
            message = (
                "The server is overloaded or not ready yet (llm stub)."
                if status == 503
                else "The server had an error while processing your request (llm stub)."
            )
            err = _error_body(message, "server_error")
            headers = {"x-request-id": f"req_stub_{seq}"}
            return self._json_reply(status, err, keep_alive=keep, headers=headers, delay_s=latency_s)

        completion = self._completion(seq, model, body["messages"], reply)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return _Reply(self._stream(completion, include_usage, keep), keep, latency_s)
        if keep:
            payload = _encode_json(completion)
            return _Reply(_OK_JSON_HEAD % (len(payload), seq) + payload, True, latency_s)
        return self._json_reply(
            200, completion, keep_alive=keep, headers={"x-request-id": f"req_stub_{seq}"}, delay_s=latency_s
        )


    @staticmethod
    def _completion(
        seq: int, model: str, messages: Sequence[Any], reply: StubReply
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        completion_text = reply.content or ""
        if reply.tool_calls:
            calls = []
            for i, (name, args) in enumerate(reply.tool_calls):
                arguments = json.dumps(args, ensure_ascii=False)
                completion_text += name + arguments
                calls.append(
                    {
                        "id": f"call_{seq}_{i}",
                        "type": "function",
                        "function": {"name": name, "arguments": arguments},
                    }
                )
            message["tool_calls"] = calls
        prompt_chars = sum(len(_text(m.get("content"))) for m in messages if isinstance(m, dict))
        prompt_tokens = prompt_chars // 4 + 1
        completion_tokens = len(completion_text) // 4 + 1
        return {
            "id": f"chatcmpl-stub-{seq}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "llm-stub",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if reply.tool_calls else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


    @staticmethod
    def _stream(completion: dict[str, Any], include_usage: bool, keep: bool) -> bytes:
        """Send ``completion`` as server-sent ``chat.completion.chunk`` events (chunked body)."""
        base = {k: completion[k] for k in ("id", "created", "model", "system_fingerprint")}
        base["object"] = "chat.completion.chunk"
        choice = completion["choices"][0]
        message = choice["message"]

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                         "finish_reason": finish}]}  # fmt: skip

        events: list[dict[str, Any]] = [chunk({"role": "assistant", "content": ""})]
        content = message.get("content") or ""
        for i in range(0, len(content), 16):
            events.append(chunk({"content": content[i : i + 16]}))
        for i, call in enumerate(message.get("tool_calls") or []):
            events.append(chunk({"tool_calls": [{"index": i, **call}]}))
        events.append(chunk({}, choice["finish_reason"]))
        if include_usage:
            events.append({**base, "choices": [], "usage": completion["usage"]})

        headers = {
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "Transfer-Encoding": "chunked",
            "Connection": "keep-alive" if keep else "close",
        }
        out = bytearray(_head(200, headers))
        payloads = [b"data: " + _encode_json(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]
        for data in payloads:
            out += f"{len(data):x}\r\n".encode("ascii") + data + b"\r\n"
        out += b"0\r\n\r\n"
        return bytes(out)


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stub in the foreground until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m agentplan.testing.llm_stub",
        description="OpenAI-compatible chat-completions stub server.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes sharing the port (SO_REUSEPORT); fault control stays per process")
    parser.add_argument("--no-request-log", action="store_true",
                        help="keep counters only, not every request body (long benchmarks)")
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )

    server = StubLLMServer(
        host=args.host,
        port=args.port,
        latency_ms=args.latency_ms,
        error_rate=args.error_rate,
        seed=args.seed,
        record_requests=not args.no_request_log,
        reuse_port=args.reuse_port or args.workers > 1,
    )
    children: list[subprocess.Popen[bytes]] = []

    def announce(srv: StubLLMServer) -> None:
        # Extra processes bind the port this one got; the ready line waits for all of them.
        for _ in range(args.workers - 1):
            children.append(_start_child(argv, srv.port))
        print(f"llm-stub listening on {srv.base_url}" + (f" ({args.workers} processes)" if children else ""),
              flush=True)

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
    args = [a for a in (sys.argv[1:] if argv is None else list(argv))]
    command = [sys.executable, "-m", "agentplan.testing.llm_stub", *args, "--port", str(port), "--workers", "1",
               "--reuse-port"]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, preexec_fn=_die_with_parent)
    assert child.stdout is not None
    line = child.stdout.readline()
    if b"listening" not in line:
        child.kill()
        raise OSError(f"stub worker process failed to start: {line!r}")
    child.stdout.close()
    return child


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: a SIGKILLed parent must not leave stub processes behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())


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
