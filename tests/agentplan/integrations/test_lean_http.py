"""The lean transport under the real openai client against aiohttp.web, a server we did not write:
Content-Length and chunked answers, keep-alive reuse, and no POST ever sent twice after the server
dropped the connection (the failure goes to the engine as a transient error instead)."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import openai
import pytest
from aiohttp import web

from agentplan import ChatMessage, MessageRole, OpenAIChatModelConnection, TransientError
from agentplan.integrations._lean_http import LeanAsyncHTTPTransport, _HostPool, _HTTPConnection
from tests.agentplan.support import EVENT_LOOPS, run_async, run_on_loop

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def completion(text: str) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]}


class Server:
    """aiohttp.web on 127.0.0.1, in the test's event loop; records each request's client port."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[int] = []  # client ports, one per request received
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.requests.append(peer[1] if peer else -1)
        return await self.handler(request)

    async def __aenter__(self) -> Server:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def chat(conn: OpenAIChatModelConnection, text: str) -> str:
    return (await conn.chat([ChatMessage(role=MessageRole.USER, content=text)], model="m")).message.content


@pytest.fixture(autouse=True)
def lean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTPLAN_HTTP_CLIENT", "lean")


def test_content_length_and_chunked_answers_over_one_kept_alive_connection() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        text = (await request.json())["messages"][0]["content"]
        if text == "chunked":
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            body = json.dumps(completion("in chunks")).encode()
            for i in range(0, len(body), 7):  # several chunks
                await response.write(body[i:i + 7])
            await response.write_eof()
            return response
        return web.json_response(completion(f"echo: {text}"))

    async def main() -> None:
        async with Server(handler) as server:
            conn = OpenAIChatModelConnection(api_base_url=server.base_url, api_key="k", timeout=5.0)
            try:
                assert isinstance(conn.client()._client._transport, LeanAsyncHTTPTransport)
                assert [await chat(conn, t) for t in ("a", "chunked", "b")] == ["echo: a", "in chunks", "echo: b"]
            finally:
                await conn.aclose()
            assert len(server.requests) == 3 and len(set(server.requests)) == 1  # one connection, reused

    run_async(main())


def test_a_post_is_never_sent_twice_after_the_server_drops_the_connection() -> None:
    """The second request reaches the server on the kept-alive connection, which the server then
    closes without answering: the old transport sent it again on a new connection."""
    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        if len(server.requests) == 2:
            assert request.transport is not None
            # A reset (linger 0), after the request was read: the old transport took a reset for
            # "the server never read it" and sent the POST again on a new connection.
            sock = request.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            request.transport.abort()
            raise web.HTTPInternalServerError()  # never sent: the transport is gone
        return web.json_response(completion("ok"))

    async def main() -> None:
        nonlocal server
        async with Server(handler) as server:
            conn = OpenAIChatModelConnection(api_base_url=server.base_url, api_key="k", timeout=5.0)
            try:
                assert await chat(conn, "first") == "ok"
                with pytest.raises(TransientError) as info:
                    await chat(conn, "second")
                assert info.value.kind == "connection"
                assert len(server.requests) == 2  # not resent
                assert await chat(conn, "third") == "ok"  # a fresh connection afterwards
            finally:
                await conn.aclose()
            assert len(server.requests) == 3

    server: Any = None
    run_async(main())


def test_a_pool_limit_bounds_connections_to_the_server() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.json_response(completion("ok"))

    async def main() -> None:
        async with Server(handler) as server:
            transport = LeanAsyncHTTPTransport(max_connections=3)
            client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0,
                                        http_client=openai.DefaultAsyncHttpxClient(transport=transport))
            try:
                results = await asyncio.gather(*(client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": str(i)}]) for i in range(20)))
                assert [r.choices[0].message.content for r in results] == ["ok"] * 20
                assert len(set(server.requests)) <= 3
            finally:
                await client.close()

    run_async(main())


class _WrittenTransport(asyncio.Transport):
    """Keeps what the connection writes; the test plays the server by feeding the connection bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.aborted = True


@pytest.mark.parametrize("loop_kind", EVENT_LOOPS)
def test_a_read_deadline_under_a_millisecond_survives_reuse_before_its_timer_ran(loop_kind: str) -> None:
    # uvloop runs a delay under half a millisecond as call_soon, whose Handle has no when(): the second
    # exchange re-arms the read timer while the first one's is such a Handle, not yet run.
    async def main() -> None:
        pool = _HostPool(asyncio.get_running_loop(), b"http", "127.0.0.1", 80, None, 1, 5.0)
        connection = _HTTPConnection(pool)
        transport = _WrittenTransport()
        connection.connection_made(transport)
        for _ in range(2):
            stream, head = connection.send(b"POST /v1 HTTP/1.1\r\n\r\n", "POST", True, read_timeout=0.0003)
            connection.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            assert head.done() and stream.complete and stream.chunks == [b"ok"]
        await asyncio.sleep(0.005)  # the timer runs with no exchange in progress: nothing to time out
        assert len(transport.written) == 2 and not transport.aborted and not connection.closed

    run_on_loop(loop_kind, main())
