"""A lean HTTP/1.1 transport for the openai client, written directly on asyncio protocols. Package-internal.

Kept because it was measured at about 1.5x less CPU per model call than openai's aiohttp client, the
best maintained stack (README, HTTP client); the connection uses it only for the plain case below and
falls back to that client otherwise.

The stock stack (httpx -> httpcore -> h11 -> anyio streams) costs ~0.3 ms of CPU per call in
Python bookkeeping, more than everything else an agent does per record against a fast model
server. This transport does the same job for the plain case the openai client needs: one request
at a time per keep-alive connection, a bounded pool per (scheme, host, port), Content-Length,
chunked and close-delimited bodies, TLS through ``loop.create_connection(ssl=...)``, and the
connect/read/write/pool timeouts of ``request.extensions["timeout"]`` raised as the httpx
exception types, so openai maps failures to ``APIConnectionError``/``APITimeoutError`` as usual.

The fast path per call: one ``transport.write`` of head and body, one future for the response
head, head parsing with bytes operations, and no timer object at all in the common case (the read
timeout is one timer per connection that re-arms itself lazily from the time of the last byte).

It never sends a POST twice: a connection that fails after the request was written fails the
request (``httpx.ReadError``/``RemoteProtocolError``, a transient error to the engine, the one retry
layer), since the model may have seen it. A request is sent on a new connection, once, only when a
kept-alive one turned out closed before the request was written, or when its method is idempotent.

CA bundles (``SSL_CERT_FILE``/``SSL_CERT_DIR``) are read through httpx's TLS context. Not supported:
HTTP proxies (the connection hands a proxied URL to openai's aiohttp client), HTTP/2, pipelining,
client certificates (the connection has no such setting), Unix sockets.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

try:
    import httpx2 as httpx_module  # openai 3.x
except ImportError:  # openai 1.x/2.x build on httpx
    import httpx as httpx_module  # type: ignore[import-not-found,no-redef,unused-ignore]

logger = logging.getLogger(__name__)

__all__ = ["LeanAsyncHTTPTransport", "WholeResponse", "environment_proxy"]

#: Largest response head accepted; a longer one is a protocol error, not a memory sink.
MAX_HEAD_BYTES = 64 * 1024
#: Stop reading from the socket while this much body is buffered and unread (a slow stream reader).
MAX_BUFFERED_BODY = 1024 * 1024

# Methods a server must tolerate twice (RFC 9110 9.2.2): the only ones ever resent. A POST never is,
# even after a reset (a model call the user may pay for twice); the engine's retry decides.
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_DEFAULT_PORTS = {b"http": 80, b"https": 443}
_NO_TIMEOUTS: dict[str, float | None] = {}

# How the response body is delimited.
_BODY_NONE, _BODY_LENGTH, _BODY_CHUNKED, _BODY_UNTIL_CLOSE = range(4)
# Chunked decoder states.
_CHUNK_SIZE, _CHUNK_DATA, _CHUNK_DATA_END, _CHUNK_TRAILER = range(4)

_default_tls: ssl.SSLContext | None = None


def default_tls_context() -> ssl.SSLContext:
    """One verifying TLS context for all transports: loading the CA bundle takes ~20 ms."""
    global _default_tls
    if _default_tls is None:
        _default_tls = httpx_module.create_ssl_context()
    return _default_tls


def environment_proxy(url: str) -> str | None:
    """The proxy the ``*_PROXY`` variables (minus ``NO_PROXY``) name for ``url``, if any."""
    proxies = urllib.request.getproxies_environment()
    parsed = urllib.parse.urlsplit(url)
    proxy = proxies.get(parsed.scheme) or proxies.get("all")
    if not proxy or not parsed.hostname:
        return None
    if urllib.request.proxy_bypass_environment(parsed.hostname, proxies):  # type: ignore[attr-defined]  # not in typeshed
        return None
    return proxy


def _header_value(head: bytes, lowered: bytes, marker: bytes, last: bool = False) -> bytes | None:
    """The value of the first (or last) header line starting with ``marker`` (``b"\\nname:"``)."""
    at = lowered.rfind(marker) if last else lowered.find(marker)
    if at < 0:
        return None
    start = at + len(marker)
    end = head.find(b"\r", start)
    return head[start:end if end >= 0 else len(head)].strip(b" \t")


class WholeResponse(NamedTuple):
    """A whole response as :meth:`LeanAsyncHTTPTransport.send_encoded` returns it (body not decoded)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    content_encoded: bool  # a Content-Encoding header is present: decode before use
    extensions: dict[str, bytes]


class _ProtocolViolation(Exception):
    """The server sent something that is not HTTP/1.1; becomes RemoteProtocolError."""


class _ResponseStream(httpx_module.AsyncByteStream):
    """The response of one exchange: head fields once parsed, then body pieces as they arrive.

    The connection fills it from ``data_received``; it outlives the exchange, so the connection
    goes back to the pool the moment the last body byte arrives, whether or not anyone reads it.
    """

    __slots__ = (
        "_connection",
        "buffered",
        "chunks",
        "complete",
        "content_encoded",
        "error",
        "failed_before_response",
        "headers",
        "reason",
        "status",
        "unsent",
        "version",
    )

    def __init__(self, connection: _HTTPConnection) -> None:
        self.status = 0
        self.reason = b""
        self.version = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.complete = False
        self.content_encoded = False  # a Content-Encoding header: the body needs decoding
        self.error: Exception | None = None
        self.failed_before_response = False  # closed before any response byte: resent if idempotent
        self.unsent = False  # ... and before the request was written: resent whatever the method
        self._connection: _HTTPConnection | None = connection

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            if self.chunks:
                chunks, self.chunks, self.buffered = self.chunks, [], 0
                if self._connection is not None:
                    self._connection.body_drained()
                for chunk in chunks:
                    yield chunk
                continue
            if self.error is not None:
                raise self.error
            if self.complete or self._connection is None:
                return
            await self._connection.wait_for_body(self)

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not self.complete and self.error is None:
            connection.abandon(self)  # a half-read response: the connection cannot be reused


class _HTTPConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one exchange at a time."""

    def __init__(self, pool: _HostPool) -> None:
        self._pool = pool
        self._loop = pool.loop
        self._transport: asyncio.Transport | None = None
        self.closed = False
        self.counted = True  # holds one of the pool's max_connections slots
        self.reused = False  # has completed an exchange before
        self.idle_since = 0.0
        self._stream: _ResponseStream | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._waiting_for_head = False
        self._head_only = False
        self._head_done = False
        self._head_buffer = b""
        self._request_keep_alive = True
        self._keep_alive = True
        self._body_mode = _BODY_NONE
        self._remaining = 0
        self._chunk_state = _CHUNK_SIZE
        self._chunk_buffer = bytearray()
        self._got_bytes = False
        self._reading_paused = False
        # Read timeout: one lazily re-armed timer per connection (see _arm_read_timer).
        self._read_timeout: float | None = None
        self._last_activity = 0.0
        self._timer: asyncio.Handle | None = None
        # The timer's due time, kept here: uvloop runs a delay under half a millisecond as call_soon,
        # whose Handle has no when().
        self._timer_due = 0.0
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None

    # ----------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        stream = self._stream
        if stream is None:  # bytes nobody asked for: the connection's framing is lost
            self._close()
            return
        self._last_activity = self._loop.time()
        if self._head_done:
            self._feed_body(stream, data)
        else:
            self._got_bytes = True
            if self._head_buffer:
                data, self._head_buffer = self._head_buffer + data, b""
            while True:
                end = data.find(b"\r\n\r\n")
                if end < 0:
                    if len(data) > MAX_HEAD_BYTES:
                        self._fail(httpx_module.RemoteProtocolError("response head exceeds 64 KiB"))
                        return
                    self._head_buffer = data
                    return
                try:
                    informational = self._parse_head(stream, data[:end])
                except _ProtocolViolation as exc:
                    self._fail(httpx_module.RemoteProtocolError(str(exc)))
                    return
                data = data[end + 4:]
                if not informational:
                    break
            self._head_done = True
            if self._body_mode == _BODY_NONE:
                self._finish(stream, extra=bool(data))
            elif data:
                self._feed_body(stream, data)
        # _finish and _fail wake the waiter themselves; here: the head is in, or more body is.
        if self._waiter is not None and self._head_done and (self._waiting_for_head or stream.chunks):
            self._wake()

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost decides what the EOF meant

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        stream = self._stream
        if stream is not None:
            if self._head_done and self._body_mode == _BODY_UNTIL_CLOSE and exc is None:
                self._keep_alive = False
                self._finish(stream)
            elif not self._got_bytes:
                stream.failed_before_response = True
                self._fail(httpx_module.RemoteProtocolError("server disconnected without sending a response")
                           if exc is None else httpx_module.ReadError(f"connection lost before the response: {exc}"))
            else:
                self._fail(httpx_module.RemoteProtocolError("server closed the connection mid-response")
                           if exc is None else httpx_module.ReadError(f"connection lost mid-response: {exc}"))
        self._pool.discard(self)
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(None)

    # ----------------------------------------------------------------- exchange

    def send(self, payload: bytes, method: str, keep_alive: bool,
             read_timeout: float | None) -> tuple[_ResponseStream, asyncio.Future[None]]:
        """Write one request; returns its response stream and a future resolved at the response head."""
        stream = _ResponseStream(self)
        self._stream = stream
        self._head_only = method == "HEAD"
        self._head_done = False
        self._request_keep_alive = keep_alive
        self._got_bytes = False
        self._read_timeout = read_timeout
        self._last_activity = self._loop.time()
        waiter = self._loop.create_future()
        self._waiter = waiter
        self._waiting_for_head = True
        if self.closed or self._transport is None:  # lost between connect (or release) and now
            stream.failed_before_response = stream.unsent = True  # nothing was written: safe to send
            self._fail(httpx_module.RemoteProtocolError("connection closed before the request was sent"))
            return stream, waiter
        self._transport.write(payload)
        if read_timeout is not None:
            self._arm_read_timer()
        return stream, waiter

    async def drain(self, write_timeout: float | None) -> None:
        """Wait until the kernel takes a large request body, within the write timeout."""
        if not self._write_paused or self.closed:
            return
        self._drain_waiter = self._loop.create_future()
        try:
            await asyncio.wait_for(self._drain_waiter, write_timeout)
        except asyncio.TimeoutError:  # a distinct class before Python 3.11
            self._close()
            raise httpx_module.WriteTimeout("timed out sending the request") from None
        finally:
            self._drain_waiter = None
        self._last_activity = self._loop.time()  # the read timeout starts once the request is out

    async def wait_for_body(self, stream: _ResponseStream) -> None:
        if self._stream is not stream:  # finished or failed between checks
            return
        self._waiting_for_head = False
        waiter = self._waiter = self._loop.create_future()
        try:
            await waiter
        except BaseException:
            self.abandon(stream)
            raise

    def body_drained(self) -> None:
        if self._reading_paused and self._transport is not None and not self.closed:
            self._reading_paused = False
            self._last_activity = self._loop.time()
            self._transport.resume_reading()

    def abandon(self, stream: _ResponseStream) -> None:
        """The caller gave up on ``stream`` before its end: drop the connection."""
        if self._stream is stream:
            self._stream = None
            self._waiter = None
            self._close()

    # ----------------------------------------------------------------- parsing

    def _parse_head(self, stream: _ResponseStream, head: bytes) -> bool:
        """Fill ``stream`` from a response head; True for an informational (1xx) response to skip."""
        lines = head.split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        code, _, reason = rest.partition(b" ")
        if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise _ProtocolViolation(f"malformed status line {lines[0][:100]!r}")
        status = int(code)
        if 100 <= status < 200 and status != 101:
            return True
        headers = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name[-1:] in (b" ", b"\t"):
                raise _ProtocolViolation(f"malformed header line {line[:100]!r}")
            headers.append((name, value.strip(b" \t")))
        # The three framing headers, found in one lowercase copy of the head (no per-header work).
        lowered = head.lower()
        length = _header_value(head, lowered, b"\ncontent-length:")
        if length is not None and _header_value(head, lowered, b"\ncontent-length:", last=True) != length:
            raise _ProtocolViolation("conflicting Content-Length headers")
        encoding = _header_value(lowered, lowered, b"\ntransfer-encoding:", last=True)
        chunked = encoding is not None and encoding.endswith(b"chunked")
        connection = _header_value(lowered, lowered, b"\nconnection:") or b""
        stream.status, stream.reason, stream.version, stream.headers = status, reason, version, headers
        stream.content_encoded = b"\ncontent-encoding:" in lowered
        self._keep_alive = self._request_keep_alive and (
            b"keep-alive" in connection if version == b"HTTP/1.0" else b"close" not in connection)
        if self._head_only or status in (204, 304) or status == 101:
            self._body_mode = _BODY_NONE
        elif chunked:
            self._body_mode = _BODY_CHUNKED
            self._chunk_state = _CHUNK_SIZE
            self._chunk_buffer.clear()
        elif length is not None:
            if not length.isdigit():
                raise _ProtocolViolation(f"invalid Content-Length {length[:40]!r}")
            self._remaining = int(length)
            self._body_mode = _BODY_LENGTH if self._remaining else _BODY_NONE
        else:
            self._body_mode = _BODY_UNTIL_CLOSE
            self._keep_alive = False
        if status == 101:
            raise _ProtocolViolation("protocol upgrades are not supported")
        return False

    def _feed_body(self, stream: _ResponseStream, data: bytes) -> None:
        mode = self._body_mode
        if mode == _BODY_LENGTH:
            remaining = self._remaining
            if len(data) < remaining:
                self._remaining = remaining - len(data)
                self._add_chunk(stream, data)
                return
            self._add_chunk(stream, data[:remaining] if len(data) > remaining else data)
            self._finish(stream, extra=len(data) > remaining)
        elif mode == _BODY_CHUNKED:
            try:
                self._feed_chunked(stream, data)
            except _ProtocolViolation as exc:
                self._fail(httpx_module.RemoteProtocolError(str(exc)))
        else:  # _BODY_UNTIL_CLOSE
            self._add_chunk(stream, data)

    def _add_chunk(self, stream: _ResponseStream, data: bytes) -> None:
        if data:
            stream.chunks.append(data)
            stream.buffered += len(data)
            if stream.buffered > MAX_BUFFERED_BODY and not self._reading_paused and self._transport is not None:
                self._reading_paused = True
                self._transport.pause_reading()

    def _feed_chunked(self, stream: _ResponseStream, data: bytes) -> None:
        buffer = self._chunk_buffer
        buffer += data
        pos = 0
        while True:
            state = self._chunk_state
            if state == _CHUNK_DATA:
                take = min(self._remaining, len(buffer) - pos)
                if take == 0:
                    break
                self._add_chunk(stream, bytes(buffer[pos:pos + take]))
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._chunk_state = _CHUNK_DATA_END
                continue
            if state == _CHUNK_DATA_END:
                if len(buffer) - pos < 2:
                    break
                if buffer[pos:pos + 2] != b"\r\n":
                    raise _ProtocolViolation("chunk not followed by CRLF")
                pos += 2
                self._chunk_state = _CHUNK_SIZE
                continue
            end = buffer.find(b"\r\n", pos)
            if end < 0:
                if len(buffer) - pos > MAX_HEAD_BYTES:
                    raise _ProtocolViolation("chunk header or trailer line too long")
                break
            line = bytes(buffer[pos:end])
            pos = end + 2
            if state == _CHUNK_SIZE:
                size_text = line.split(b";", 1)[0].strip(b" \t")
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise _ProtocolViolation(f"invalid chunk size {line[:40]!r}") from None
                if size < 0:
                    raise _ProtocolViolation(f"invalid chunk size {line[:40]!r}")
                if size:
                    self._remaining = size
                    self._chunk_state = _CHUNK_DATA
                else:
                    self._chunk_state = _CHUNK_TRAILER
            elif not line:  # the empty line after the (usually absent) trailers ends the body
                extra = pos < len(buffer)
                buffer.clear()
                self._finish(stream, extra=extra)
                return
        del buffer[:pos]

    # ----------------------------------------------------------------- completion and failure

    def _finish(self, stream: _ResponseStream, extra: bool = False) -> None:
        """The whole response is in: hand the connection back to the pool (or close it)."""
        stream.complete = True
        stream._connection = None
        self._stream = None
        self._wake()
        if self._reading_paused and self._transport is not None and not self.closed:
            self._reading_paused = False
            self._transport.resume_reading()
        if extra or not self._keep_alive or self.closed:
            self._close()  # bytes past the response, or the server said it closes
            return
        self.reused = True
        self._pool.release(self)

    def _fail(self, exc: Exception) -> None:
        stream = self._stream
        self._stream = None
        if stream is not None:
            if stream.error is None:
                stream.error = exc
            stream._connection = None
        self._wake()
        self._close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _close(self, graceful: bool = False) -> None:
        """Leave the pool; abort the socket mid-exchange, close it gracefully when idle."""
        self.closed = True
        self._cancel_timer()
        if self._transport is not None:
            if graceful:
                self._transport.close()
            else:
                self._transport.abort()
        self._pool.discard(self)

    def close_idle(self) -> None:
        self._close(graceful=True)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # ----------------------------------------------------------------- read timeout

    def _arm_read_timer(self) -> None:
        """Make sure a timer fires no later than the current read deadline.

        One timer serves many exchanges: it is only replaced when a deadline comes earlier than
        the pending one, and when it fires it re-arms itself from the last byte received.
        """
        assert self._read_timeout is not None
        deadline = self._last_activity + self._read_timeout
        timer = self._timer
        if timer is not None:
            if self._timer_due <= deadline:
                return
            timer.cancel()
        self._set_read_timer(deadline)

    def _set_read_timer(self, deadline: float) -> None:
        self._timer_due = deadline
        self._timer = self._loop.call_at(deadline, self._on_read_timer)

    def _on_read_timer(self) -> None:
        self._timer = None
        if self._stream is None or self._read_timeout is None or self.closed:
            return  # idle now; the next exchange arms a new timer
        now = self._loop.time()
        if self._reading_paused or self._write_paused:  # our reader (or the kernel) is slow, not the server
            self._last_activity = now
        deadline = self._last_activity + self._read_timeout
        if now < deadline - 0.001:  # the loop may run a timer up to its clock resolution early
            self._set_read_timer(deadline)
            return
        self._fail(httpx_module.ReadTimeout(f"no response bytes for {self._read_timeout:g} s"))


class _HostPool:
    """Keep-alive connections to one (scheme, host, port), at most ``max_connections`` open."""

    def __init__(self, loop: asyncio.AbstractEventLoop, scheme: bytes, host: str, port: int,
                 tls: ssl.SSLContext | None, max_connections: int, keepalive_expiry: float | None) -> None:
        self.loop = loop
        self.scheme = scheme
        self.host = host
        self.port = port
        self.tls = tls
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self.idle: list[_HTTPConnection] = []  # a stack: the most recently used is warmest
        self.open = 0
        self.waiters: collections.deque[asyncio.Future[_HTTPConnection | None]] = collections.deque()
        self.closed = False

    def take_idle(self) -> _HTTPConnection | None:
        idle = self.idle
        if not idle:
            return None
        expiry = self.keepalive_expiry
        now = self.loop.time() if expiry is not None else 0.0
        while idle:
            connection = idle.pop()
            if expiry is None or now - connection.idle_since < expiry:
                return connection
            connection.close_idle()
        return None

    async def acquire(self, timeouts: dict[str, float | None], fresh: bool = False) -> _HTTPConnection:
        while True:
            if not fresh:
                connection = self.take_idle()
                if connection is not None:
                    return connection
            if self.closed:
                raise RuntimeError("the HTTP transport is closed")
            if self.open < self.max_connections:
                return await self._connect(timeouts.get("connect"))
            fresh = False  # no slot for a new connection: a released one will do
            waiter: asyncio.Future[_HTTPConnection | None] = self.loop.create_future()
            self.waiters.append(waiter)
            try:
                connection = await asyncio.wait_for(waiter, timeouts.get("pool"))
            except asyncio.TimeoutError:  # a distinct class before Python 3.11
                raise httpx_module.PoolTimeout(
                    f"no free connection to {self.host}:{self.port} within the pool timeout "
                    f"({self.max_connections} connections in use)") from None
            except BaseException:
                # Cancelled after being handed a connection or a slot: pass it on, not leak it.
                if waiter.done() and not waiter.cancelled():
                    handed = waiter.result()
                    if handed is not None:
                        self.release(handed)
                    else:
                        self._wake_one()
                raise
            if connection is not None:
                return connection

    async def _connect(self, timeout: float | None) -> _HTTPConnection:
        self.open += 1
        connection: _HTTPConnection | None = None

        def factory() -> _HTTPConnection:
            nonlocal connection
            connection = _HTTPConnection(self)
            return connection

        try:
            await asyncio.wait_for(self.loop.create_connection(
                factory, self.host, self.port, ssl=self.tls,
                server_hostname=self.host if self.tls is not None else None), timeout)
        except BaseException as exc:
            if connection is not None and connection.counted:
                connection.counted = False
                connection.closed = True
                if connection._transport is not None:
                    connection._transport.abort()
            self.open -= 1
            self._wake_one()
            if isinstance(exc, asyncio.TimeoutError):
                raise httpx_module.ConnectTimeout(f"connecting to {self.host}:{self.port} timed out") from exc
            if isinstance(exc, OSError):  # refused, unreachable, DNS, TLS (ssl.SSLError is an OSError)
                raise httpx_module.ConnectError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
            raise
        assert connection is not None
        return connection

    def release(self, connection: _HTTPConnection) -> None:
        """A connection ready for the next request: to the longest waiter, else to the idle stack."""
        if self.closed or connection.closed:
            connection.close_idle()
            return
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        if self.keepalive_expiry is not None:
            connection.idle_since = self.loop.time()
        self.idle.append(connection)

    def discard(self, connection: _HTTPConnection) -> None:
        """A connection is gone: free its slot (once) and let a waiter open a new one."""
        if not connection.counted:
            return
        connection.counted = False
        self.open -= 1
        try:
            self.idle.remove(connection)
        except ValueError:
            pass
        self._wake_one()

    def _wake_one(self) -> None:
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        self.closed = True
        for connection in list(self.idle):
            connection.close_idle()
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(httpx_module.PoolTimeout("the HTTP transport was closed"))


class LeanAsyncHTTPTransport(httpx_module.AsyncBaseTransport):
    """An ``httpx`` async transport on asyncio protocols; see the module docstring.

    ``max_connections`` bounds each (scheme, host, port) pool: a request beyond it waits for a
    free connection (up to the pool timeout) and never opens another. Bind one instance to one
    event loop, as with any pooled asyncio client.
    """

    def __init__(self, max_connections: int = 1024, keepalive_expiry: float | None = 5.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self._ssl_context = ssl_context
        self._pools: dict[tuple[bytes, bytes, int | None], _HostPool] = {}
        self._closed = False

    def open_connections(self) -> int:
        """Connections open or being opened, over all pools."""
        return sum(pool.open for pool in self._pools.values())

    def _pool_for(self, url: Any) -> _HostPool:
        key = (url.raw_scheme, url.raw_host, url.port)
        pool = self._pools.get(key)
        if pool is None:
            if self._closed:
                raise RuntimeError("the HTTP transport is closed")
            scheme = url.raw_scheme
            if scheme not in _DEFAULT_PORTS:
                raise httpx_module.UnsupportedProtocol(f"unsupported URL scheme {scheme.decode(errors='replace')!r}")
            tls = None
            if scheme == b"https":
                tls = self._ssl_context or default_tls_context()
            pool = _HostPool(asyncio.get_running_loop(), scheme, url.raw_host.decode("ascii"),
                             url.port or _DEFAULT_PORTS[scheme], tls, self.max_connections, self.keepalive_expiry)
            self._pools[key] = pool
        return pool

    async def handle_async_request(self, request: Any) -> Any:
        pool = self._pool_for(request.url)
        timeouts = request.extensions.get("timeout") or _NO_TIMEOUTS
        payload, keep_alive = await self._encode(request)
        stream = await self._round_trip(pool, payload, request.method, keep_alive, timeouts)
        extensions = {"http_version": stream.version, "reason_phrase": stream.reason}
        if stream.complete:
            # The usual case: the whole body came with the head. A response already read costs
            # the client far less than one it must pull through its async stream machinery.
            chunks = stream.chunks
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            response = httpx_module.Response(status_code=stream.status, headers=stream.headers,
                                             stream=httpx_module.ByteStream(body), extensions=extensions)
            response.read()  # decodes any Content-Encoding, as reading the stream would
            return response
        return httpx_module.Response(status_code=stream.status, headers=stream.headers, stream=stream,
                                     extensions=extensions)

    async def send_encoded(self, url: Any, payload: bytes, keep_alive: bool,
                           timeouts: dict[str, float | None]) -> WholeResponse:
        """A POST already encoded as bytes (head and body) to ``url``'s host; the response read whole.

        The path of :class:`agentplan.integrations._prepared_post.PreparedPost`: the same pool,
        framing, timeouts and "never resend a POST" rule as :meth:`handle_async_request`, without
        building httpx request and response objects. Raises the httpx exception types it does.
        """
        stream = await self._round_trip(self._pool_for(url), payload, "POST", keep_alive, timeouts)
        if stream.complete:
            chunks = stream.chunks
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        else:  # a body longer than the first reads: pulled to its end under the read timeout
            body = b"".join([chunk async for chunk in stream])
        return WholeResponse(stream.status, stream.headers, body, stream.content_encoded,
                            {"http_version": stream.version, "reason_phrase": stream.reason})

    async def _round_trip(self, pool: _HostPool, payload: bytes, method: str, keep_alive: bool,
                          timeouts: dict[str, float | None]) -> _ResponseStream:
        """One request on a pooled connection, up to the response head; raises what failed."""
        connection = pool.take_idle() if not pool.waiters else None
        if connection is None:
            connection = await pool.acquire(timeouts)
        stream = await self._exchange(connection, payload, method, keep_alive, timeouts)
        if stream.failed_before_response and connection.reused and (stream.unsent or method in _IDEMPOTENT_METHODS):
            # A kept-alive connection found closed before the request was written, or an idempotent
            # request: sent (once more) on a new connection. Never a POST the server may have read.
            logger.debug("retrying %s on a new connection: %s", method, stream.error)
            connection = await pool.acquire(timeouts, fresh=True)
            stream = await self._exchange(connection, payload, method, keep_alive, timeouts)
        if stream.status == 0:
            assert stream.error is not None
            raise stream.error
        return stream

    @staticmethod
    async def _exchange(connection: _HTTPConnection, payload: bytes, method: str, keep_alive: bool,
                        timeouts: dict[str, float | None]) -> _ResponseStream:
        stream, head = connection.send(payload, method, keep_alive, timeouts.get("read"))
        try:
            await connection.drain(timeouts.get("write"))
            await head
        except BaseException:
            connection.abandon(stream)  # cancelled mid-exchange: the connection's state is unknown
            raise
        return stream

    @staticmethod
    async def _encode(request: Any) -> tuple[bytes, bool]:
        """The request as bytes on the wire, and whether it allows keep-alive."""
        try:
            body = request.content
        except httpx_module.RequestNotRead:  # a streamed body: send it whole, in one chunk
            body = await request.aread()
        raw = request.headers.raw
        fields = b"\r\n".join([b": ".join(pair) for pair in raw])
        keep_alive = True
        chunked = False
        # One lowercase copy answers "is any header that matters present?"; only then look closer.
        lowered = b"\n" + fields.lower()
        if b"\nconnection:" in lowered or b"\ntransfer-encoding:" in lowered:
            for name, value in raw:
                name = name.lower()
                if name == b"connection":
                    keep_alive = b"close" not in value.lower()
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
        if chunked:
            body = (b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)) if body else b"0\r\n\r\n"
        start = b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), request.url.raw_path)
        return b"".join((start, fields, b"\r\n\r\n" if fields else b"\r\n", body)), keep_alive

    async def aclose(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
