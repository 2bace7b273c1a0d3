"""LeanAsyncHTTPTransport under the real openai client: against the stub, and against small raw
asyncio servers on 127.0.0.1 that misbehave on purpose (chunked bodies, Connection: close, idle
and reset connections, responses cut short, hung requests, TLS)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import socket
import ssl
import struct
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from agentplan import ChatMessage, ChatModelError, OpenAIChatModelConnection, ResourceError, TransientError
from agentplan.integrations.http_transport import LeanAsyncHTTPTransport, environment_proxy
from agentplan.testing.llm_stub import StubLLMServer
from tests.agentplan.support import run_async

REQUEST = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(autouse=True)
def lean_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTPLAN_HTTP_CLIENT", raising=False)  # the default under test


def completion(content: str = "ok") -> bytes:
    return json.dumps({"id": "c", "object": "chat.completion", "created": 1, "model": "raw",
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": content}}],
                       "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}).encode()


def reply(body: bytes, status: str = "200 OK", headers: str = "Content-Type: application/json\r\n") -> bytes:
    return f"HTTP/1.1 {status}\r\n{headers}Content-Length: {len(body)}\r\n\r\n".encode() + body


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One request's body, or None when the client closed the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    return await reader.readexactly(int(length.group(1))) if length else b""


Serve = Callable[["RawServer", int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """An asyncio TCP server on 127.0.0.1; ``serve(server, connection_index, reader, writer)``
    scripts each connection. Counts connections, requests and the most open at once."""

    def __init__(self, serve: Serve, tls: ssl.SSLContext | None = None) -> None:
        self.serve = serve
        self.tls = tls
        self.connections = 0
        self.open = 0
        self.max_open = 0
        self.requests = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.request_seen = asyncio.Event()

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._connected, "127.0.0.1", 0, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.server.close()
        for writer in self.writers:
            writer.close()

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/v1"

    async def next_request(self, reader: asyncio.StreamReader) -> bytes | None:
        body = await read_request(reader)
        if body is not None:
            self.requests += 1
            self.request_seen.set()
        return body

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = self.connections
        self.connections += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        self.writers.append(writer)
        try:
            await self.serve(self, index, reader, writer)
        except ConnectionError:
            pass
        finally:
            self.open -= 1
            writer.close()


async def keep_alive(server: RawServer, index: int, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
    """A well-behaved keep-alive server answering every request with a completion."""
    while await server.next_request(reader) is not None:
        writer.write(reply(completion(f"answer {server.requests}")))


def lean_client(base_url: str, timeout: float | httpx2.Timeout = 5.0, **transport_args: Any,
                ) -> tuple[openai.AsyncOpenAI, LeanAsyncHTTPTransport]:
    transport = LeanAsyncHTTPTransport(**transport_args)
    client = openai.AsyncOpenAI(base_url=base_url, api_key="k", max_retries=0, timeout=timeout,
                                http_client=openai.DefaultAsyncHttpxClient(transport=transport))
    return client, transport


Conversation = Callable[[openai.AsyncOpenAI, LeanAsyncHTTPTransport, RawServer], Awaitable[None]]


def converse(serve: Serve, conversation: Conversation, **client_args: Any) -> RawServer:
    """Run ``conversation`` through a lean-transport client against a RawServer running ``serve``;
    returns the server (closed) for its connection and request counts."""
    async def main() -> RawServer:
        async with RawServer(serve) as server:
            client, transport = lean_client(server.base_url, **client_args)
            async with client:
                await conversation(client, transport, server)
            return server

    return run_async(main())


async def post(client: openai.AsyncOpenAI) -> dict[str, Any]:
    response = await client.post("/chat/completions", body=REQUEST, cast_to=httpx2.Response)
    return json.loads(response.content)


def answer(data: dict[str, Any]) -> str:
    return data["choices"][0]["message"]["content"]


async def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Bounded polling on the event loop (the condition changes in protocol callbacks)."""
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset, as a server does when it closes with a request unread."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# --------------------------------------------------------------------------- against the stub


def test_concurrent_chats_through_the_connection_default(stub_llm: StubLLMServer) -> None:
    connection = OpenAIChatModelConnection(api_base_url=stub_llm.base_url, api_key="k", max_connections=8)

    async def main() -> list[str]:
        try:
            results = await asyncio.gather(*(connection.chat([ChatMessage(content=f"n{i}")], model="m")
                                             for i in range(64)))
            return [r.message.content for r in results]
        finally:
            await connection.aclose()

    assert run_async(main()) == [f"echo: n{i}" for i in range(64)]
    assert len(stub_llm.requests) == 64


def test_streamed_completion_arrives_chunk_by_chunk(stub_llm: StubLLMServer) -> None:
    async def main() -> tuple[list[str], int]:
        client, transport = lean_client(stub_llm.base_url)
        async with client:
            stream = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x" * 40}],
                                                          stream=True)
            pieces = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
            return pieces, transport.open_connections()

    pieces, open_connections = run_async(main())
    assert "".join(pieces) == "echo: " + "x" * 40
    assert len([p for p in pieces if p]) == 3  # the stub sends 16-character deltas
    assert open_connections == 1  # the chunked body ended cleanly: kept alive


def test_read_timeout_is_an_api_timeout_and_the_pool_recovers(stub_llm: StubLLMServer) -> None:
    stub_llm.fail_next(1, "timeout")

    async def main() -> str:
        client, _ = lean_client(stub_llm.base_url, timeout=0.3)
        async with client:
            with pytest.raises(openai.APITimeoutError) as info:
                await post(client)
            assert isinstance(info.value.__cause__, httpx2.ReadTimeout)
            return answer(await post(client))

    assert run_async(main()) == "echo: hi"


# --------------------------------------------------------------------------- raw servers


def test_pool_never_opens_more_than_max_connections() -> None:
    limit = 4
    barrier = asyncio.Barrier(limit)  # replies wait until `limit` requests are in flight at once

    async def serve(server: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await server.next_request(reader) is not None:
            await barrier.wait()
            writer.write(reply(completion()))

    async def conversation(client: openai.AsyncOpenAI, transport: LeanAsyncHTTPTransport, _: RawServer) -> None:
        results = await asyncio.gather(*(post(client) for _ in range(5 * limit)))
        assert [answer(r) for r in results] == ["ok"] * (5 * limit)
        assert transport.open_connections() == limit

    server = converse(serve, conversation, max_connections=limit)
    assert server.requests == 5 * limit
    assert server.max_open == limit and server.connections == limit  # waited for free ones, reused them


def test_pool_timeout_when_every_connection_is_busy() -> None:
    release = asyncio.Event()

    async def serve(server: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await server.next_request(reader) is not None:
            await release.wait()
            writer.write(reply(completion()))

    async def conversation(client: openai.AsyncOpenAI, _: LeanAsyncHTTPTransport, server: RawServer) -> None:
        first = asyncio.ensure_future(post(client))
        await server.request_seen.wait()
        with pytest.raises(openai.APITimeoutError) as info:
            await post(client)
        assert isinstance(info.value.__cause__, httpx2.PoolTimeout)
        release.set()
        assert answer(await first) == "ok"
        assert answer(await post(client)) == "ok"

    assert converse(serve, conversation, timeout=httpx2.Timeout(5.0, pool=0.2), max_connections=1).connections == 1


def test_cancelled_request_gives_its_connection_back() -> None:
    async def serve(server: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await server.next_request(reader) is not None:
            if index == 0:
                await asyncio.Event().wait()  # hang: the client gives up first
            writer.write(reply(completion()))

    async def conversation(client: openai.AsyncOpenAI, transport: LeanAsyncHTTPTransport, server: RawServer) -> None:
        hung = asyncio.ensure_future(post(client))
        await server.request_seen.wait()
        hung.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hung
        assert transport.open_connections() == 0  # its state was unknown: closed, slot freed
        assert answer(await post(client)) == "ok"

    assert converse(serve, conversation, max_connections=1).connections == 2


def test_chunked_body_with_extensions_and_trailers_keeps_the_connection() -> None:
    async def serve(server: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await server.next_request(reader) is not None:
            body = completion(f"chunked {server.requests}")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            await writer.drain()
            for i in range(0, len(body), 40):  # pieces split mid-size-line and mid-data
                piece = body[i:i + 40]
                frame = b"%x;ext=1\r\n%s\r\n" % (len(piece), piece)
                writer.write(frame[:3])
                await writer.drain()
                writer.write(frame[3:])
                await writer.drain()
            writer.write(b"0\r\nX-Trailer: t\r\n\r\n")

    async def conversation(client: openai.AsyncOpenAI, *_: Any) -> None:
        assert answer(await post(client)) == "chunked 1"
        assert answer(await post(client)) == "chunked 2"

    assert converse(serve, conversation).connections == 1


def test_connection_close_response_is_not_reused() -> None:
    async def serve(server: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await server.next_request(reader) is not None:
            writer.write(reply(completion(), headers="Content-Type: application/json\r\nConnection: close\r\n"))

    async def conversation(client: openai.AsyncOpenAI, transport: LeanAsyncHTTPTransport, _: RawServer) -> None:
        assert answer(await post(client)) == "ok"
        assert transport.open_connections() == 0
        assert answer(await post(client)) == "ok"

    assert converse(serve, conversation).connections == 2


def test_body_delimited_by_close() -> None:
    async def serve(server: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await server.next_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + completion("until close"))
            await writer.drain()

    async def conversation(client: openai.AsyncOpenAI, *_: Any) -> None:
        assert answer(await post(client)) == "until close"

    converse(serve, conversation)


def test_server_closing_an_idle_connection_costs_nothing() -> None:
    async def conversation(client: openai.AsyncOpenAI, transport: LeanAsyncHTTPTransport, server: RawServer) -> None:
        assert answer(await post(client)) == "answer 1"
        server.writers[0].close()  # the server's idle timeout
        await wait_until(lambda: transport.open_connections() == 0)
        assert answer(await post(client)) == "answer 2"

    server = converse(keep_alive, conversation)
    assert (server.connections, server.requests) == (2, 2)


def test_reset_of_a_reused_connection_is_retried_once_on_a_new_one() -> None:
    async def serve(server: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await server.next_request(reader) is not None:
            if index == 0 and server.requests == 2:
                reset(writer)  # closing just as the second request arrived
                return
            writer.write(reply(completion(f"answer {server.requests}")))

    async def conversation(client: openai.AsyncOpenAI, *_: Any) -> None:
        assert answer(await post(client)) == "answer 1"
        assert answer(await post(client)) == "answer 3"

    server = converse(serve, conversation)
    assert (server.connections, server.requests) == (2, 3)


def test_reset_of_a_new_connection_is_not_retried() -> None:
    async def serve(server: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await server.next_request(reader) is not None:
            reset(writer)

    async def conversation(client: openai.AsyncOpenAI, *_: Any) -> None:
        with pytest.raises(openai.APIConnectionError):
            await post(client)

    assert converse(serve, conversation).requests == 1


def test_clean_close_before_the_response_replays_only_idempotent_requests() -> None:
    """A POST the server may have acted on is not sent twice (the caller's retry policy decides);
    a GET is."""

    async def serve(server: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await server.next_request(reader) is not None:
            if index == 0 and server.requests == 2:
                return  # read the request, then closed without an answer
            writer.write(reply(completion(f"answer {server.requests}")))

    async def main() -> tuple[RawServer, RawServer]:
        async with RawServer(serve) as posts:
            connection = OpenAIChatModelConnection(api_base_url=posts.base_url, api_key="k", timeout=5.0)
            try:
                await connection.chat([ChatMessage(content="a")], model="m")
                with pytest.raises(TransientError) as info:
                    await connection.chat([ChatMessage(content="b")], model="m")
                assert info.value.kind == "connection"
            finally:
                await connection.aclose()
        async with RawServer(serve) as gets:
            async with httpx2.AsyncClient(transport=LeanAsyncHTTPTransport()) as client:
                assert (await client.get(gets.base_url)).json()["choices"][0]["message"]["content"] == "answer 1"
                assert (await client.get(gets.base_url)).json()["choices"][0]["message"]["content"] == "answer 3"
        return posts, gets

    posts, gets = run_async(main())
    assert (posts.connections, posts.requests) == (1, 2)
    assert (gets.connections, gets.requests) == (2, 3)


def test_close_mid_response_is_an_error_and_not_retried() -> None:
    async def serve(server: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await server.next_request(reader) is not None:
            body = completion()
            if server.requests == 2:
                writer.write(reply(body)[:-10])  # the last 10 bytes never come
                await writer.drain()
                return
            writer.write(reply(body))

    async def conversation(client: openai.AsyncOpenAI, *_: Any) -> None:
        assert answer(await post(client)) == "ok"
        with pytest.raises(openai.APIConnectionError) as info:
            await post(client)
        assert isinstance(info.value.__cause__, httpx2.RemoteProtocolError)

    assert converse(serve, conversation).requests == 2


def test_refused_connection_is_an_api_connection_error() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def main() -> None:
        client, transport = lean_client(f"http://127.0.0.1:{port}/v1")
        async with client:
            with pytest.raises(openai.APIConnectionError) as info:
                await post(client)
            assert not isinstance(info.value, openai.APITimeoutError)
            assert isinstance(info.value.__cause__, httpx2.ConnectError)
            assert transport.open_connections() == 0

    run_async(main())


def test_large_body_is_read_whole_through_backpressure() -> None:
    size = 5 * 1024 * 1024  # several times the 1 MiB the transport buffers before pausing the socket

    async def serve(server: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await server.next_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            for _ in range(size // 65536):
                writer.write(bytes(range(256)) * 256)
                await writer.drain()

    async def main() -> None:
        async with RawServer(serve) as server:
            async with httpx2.AsyncClient(transport=LeanAsyncHTTPTransport()) as client:
                async with client.stream("GET", server.base_url) as response:
                    received = bytearray()
                    async for piece in response.aiter_raw():
                        received += piece
                        await asyncio.sleep(0)  # a reader slower than the socket
                assert received == bytes(range(256)) * (size // 256)
                assert (await client.get(server.base_url)).num_bytes_downloaded == size  # same connection
            assert server.connections == 1

    run_async(main())


def test_bodies_that_are_not_a_chat_completion_are_chat_model_errors() -> None:
    bodies = [b"<html>bad gateway</html>", b'{"object": "chat.completion"}', b'{"choices": []}']

    async def serve(server: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await server.next_request(reader) is not None:
            writer.write(reply(bodies[server.requests - 1]))

    async def main() -> list[str]:
        errors = []
        async with RawServer(serve) as server:
            connection = OpenAIChatModelConnection(api_base_url=server.base_url, api_key="k")
            try:
                for _ in bodies:
                    with pytest.raises(ChatModelError) as info:
                        await connection.chat([ChatMessage(content="x")], model="m")
                    assert not isinstance(info.value, TransientError)
                    errors.append(str(info.value))
            finally:
                await connection.aclose()
        return errors

    not_json, no_choices, empty = run_async(main())
    assert "body is not JSON" in not_json and "bad gateway" in not_json
    assert "no 'choices' list" in no_choices
    assert empty == "model returned no choices"


# --------------------------------------------------------------------------- TLS


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl CLI to make a test certificate (and the cryptography package is not used)")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


def test_tls_with_a_trusted_certificate_and_refusal_of_an_untrusted_one(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))

    async def main() -> RawServer:
        async with RawServer(keep_alive, tls=server_tls) as server:
            client, _ = lean_client(server.base_url, ssl_context=trusting)
            async with client:
                assert answer(await post(client)) == "answer 1"
                assert answer(await post(client)) == "answer 2"
            default, _ = lean_client(server.base_url)  # system CAs: the self-signed certificate fails
            async with default:
                with pytest.raises(openai.APIConnectionError) as info:
                    await post(default)
                assert isinstance(info.value.__cause__, httpx2.ConnectError)
                assert "CERTIFICATE_VERIFY_FAILED" in str(info.value.__cause__)
            return server

    assert run_async(main()).requests == 2


# --------------------------------------------------------------------------- selection


def test_proxy_variables_send_the_connection_to_the_stock_client(monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
                 "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert environment_proxy("http://10.1.2.3:8000/v1") is None
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "localhost")
    assert environment_proxy("http://10.1.2.3:8000/v1") == "http://proxy.invalid:3128"
    assert environment_proxy("http://localhost:8000/v1") is None
    assert environment_proxy("https://10.1.2.3/v1") is None  # HTTPS_PROXY not set

    connection = OpenAIChatModelConnection(api_base_url="http://10.1.2.3:8000/v1", api_key="k")

    async def transport_used() -> Any:
        client = connection._http_client()
        try:
            return client._transport_for_url(httpx2.URL("http://10.1.2.3:8000/v1/chat/completions"))
        finally:
            await client.aclose()

    with caplog.at_level(logging.INFO, logger="agentplan.integrations.openai"):
        transport = run_async(transport_used())
    assert not isinstance(transport, LeanAsyncHTTPTransport)
    assert "proxy.invalid:3128" in caplog.text


def test_unknown_http_client_setting_fails_naming_it(stub_llm: StubLLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTPLAN_HTTP_CLIENT", "curl")
    connection = OpenAIChatModelConnection(api_base_url=stub_llm.base_url, api_key="k")
    with pytest.raises(ResourceError, match="AGENTPLAN_HTTP_CLIENT='curl'"):
        run_async(connection.chat([ChatMessage(content="x")], model="m"))
