"""The connection's prepared chat POST (agentplan.integrations._prepared_post) against a capturing HTTP
server on 127.0.0.1: the same request on the wire as the SDK's ``client.post``, and the SDK's outcomes
(decoded bodies, its exceptions for error statuses and failures, redirects followed)."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import openai
import pytest
from aiohttp import web

from agentplan import ChatMessage, MessageRole, OpenAIChatModelConnection, TransientError
from agentplan.integrations._lean_http import LeanAsyncHTTPTransport, httpx_module
from agentplan.integrations._prepared_post import PreparedPost, prepare
from tests.agentplan.support import run_async

ANSWER = {"id": "c1", "object": "chat.completion", "model": "m", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}
MESSAGES = [ChatMessage(role=MessageRole.SYSTEM, content="Be brief. 100% sure: ünïcode"),
            ChatMessage(role=MessageRole.USER, content="hello")]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Capture:
    """What the server received: (method, path, headers as (name, value) bytes, body) per request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, list[tuple[bytes, bytes]], bytes]] = []


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[tuple[str, Capture]]:
    capture = Capture()

    async def recording(request: web.Request) -> web.StreamResponse:
        capture.requests.append((request.method, request.path, list(request.raw_headers), await request.read()))
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recording)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/v1", capture
    finally:
        await runner.cleanup()


async def answer(_request: web.Request) -> web.StreamResponse:
    return web.json_response(ANSWER)


def connection(base_url: str, **kwargs: Any) -> OpenAIChatModelConnection:
    return OpenAIChatModelConnection(api_base_url=base_url, api_key="sk-test", **{"timeout": 5.0, **kwargs})


async def chat(conn: OpenAIChatModelConnection) -> Any:
    try:
        return await conn.chat(MESSAGES, model="m", temperature=0.5)
    finally:
        await conn.aclose()


def headers_of(raw: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    return {name.lower(): value for name, value in raw}


def test_the_prepared_request_is_the_one_client_post_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTPLAN_HTTP_CLIENT", "lean")

    async def scenario() -> None:
        async with server(answer) as (base_url, capture):
            conn = connection(base_url, organization="org-1", default_headers={"X-Team": "a%b"})
            client = conn.client()
            assert isinstance(conn._chat_post, PreparedPost)  # the default stack takes the prepared path
            body = {"model": "m", "messages": [{"role": "user", "content": "ünïcode 100%"}]}
            fast = await conn._chat_post.post(body)
            await client.post("/chat/completions", body=body, cast_to=httpx_module.Response)
            await conn.aclose()
        assert json.loads(fast) == ANSWER
        (method, path, prepared, prepared_body), (_, sdk_path, sdk, sdk_body) = capture.requests
        assert (method, path) == ("POST", "/v1/chat/completions") and sdk_path == path
        assert headers_of(prepared) == headers_of(sdk)
        assert headers_of(prepared)[b"authorization"] == b"Bearer sk-test"
        assert headers_of(prepared)[b"x-team"] == b"a%b"
        assert prepared_body == sdk_body

    run_async(scenario())


def test_a_compressed_answer_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTPLAN_HTTP_CLIENT", "lean")

    async def gzipped(_request: web.Request) -> web.StreamResponse:
        return web.Response(body=gzip.compress(json.dumps(ANSWER).encode()), content_type="application/json",
                            headers={"Content-Encoding": "gzip"})

    async def scenario() -> Any:
        async with server(gzipped) as (base_url, _):
            return await chat(connection(base_url))

    result = run_async(scenario())
    assert result.message.content == "fine" and result.prompt_tokens == 3


@pytest.mark.parametrize(("status", "error_class"), [(429, openai.RateLimitError), (400, openai.BadRequestError),
                                                     (503, openai.InternalServerError)])
def test_error_statuses_raise_what_client_post_raises(status: int, error_class: type[Exception]) -> None:
    async def failing(_request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": {"message": f"no ({status})", "type": "t"}}, status=status,
                                 headers={"Retry-After": "2", "x-request-id": "req-9"})

    async def scenario() -> tuple[Any, Any]:
        async with server(failing) as (base_url, _):
            transport = LeanAsyncHTTPTransport(max_connections=4)
            client = openai.AsyncOpenAI(base_url=base_url, api_key="k", max_retries=0, http_client=
                                        openai.DefaultAsyncHttpxClient(transport=transport))
            prepared = prepare(client, transport, "/chat/completions")
            assert prepared is not None
            errors = []
            for call in (lambda: prepared.post({"model": "m"}),
                         lambda: client.post("/chat/completions", body={"model": "m"}, cast_to=httpx_module.Response)):
                with pytest.raises(error_class) as caught:
                    await call()
                errors.append(caught.value)
            await client.close()
            return errors[0], errors[1]

    fast, sdk = run_async(scenario())
    assert type(fast) is type(sdk)
    assert str(fast) == str(sdk) and fast.body == sdk.body and fast.request_id == sdk.request_id == "req-9"
    assert fast.response.headers["retry-after"] == "2"
    assert json.loads(fast.request.content) == {"model": "m"}  # the request it failed, as the SDK reports it


def test_a_redirect_is_followed_as_the_sdk_follows_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTPLAN_HTTP_CLIENT", "lean")

    async def moved(request: web.Request) -> web.StreamResponse:
        if request.path == "/v1/chat/completions":
            raise web.HTTPTemporaryRedirect("/v2/chat/completions")
        return web.json_response(ANSWER)

    async def scenario() -> tuple[Any, Capture]:
        async with server(moved) as (base_url, capture):
            return await chat(connection(base_url)), capture

    result, capture = run_async(scenario())
    assert result.message.content == "fine"
    # The prepared POST, the SDK's resend after the 307, and the request it was redirected to.
    assert [(m, p) for m, p, _, _ in capture.requests] == [
        ("POST", "/v1/chat/completions"), ("POST", "/v1/chat/completions"), ("POST", "/v2/chat/completions")]


def test_failures_on_the_wire_are_the_sdks_connection_and_timeout_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTPLAN_HTTP_CLIENT", "lean")
    mode = {"now": "drop"}
    release = asyncio.Event()

    async def misbehaving(request: web.Request) -> web.StreamResponse:
        if mode["now"] == "drop":
            assert request.transport is not None
            request.transport.abort()  # the connection dies before any response byte
            return web.Response()
        await asyncio.wait_for(release.wait(), 10)  # held past the client's read timeout
        return web.json_response(ANSWER)

    async def scenario() -> list[TransientError]:
        caught = []
        async with server(misbehaving) as (base_url, _):
            for mode["now"] in ("drop", "slow"):
                with pytest.raises(TransientError) as error:
                    await chat(connection(base_url, timeout=0.5))
                caught.append(error.value)
            release.set()
        return caught

    dropped, slow = run_async(scenario())
    assert dropped.kind == "connection" and type(dropped.__cause__) is openai.APIConnectionError
    assert isinstance(dropped.__cause__.__cause__, httpx_module.TransportError)
    assert slow.kind == "timeout" and type(slow.__cause__) is openai.APITimeoutError
    assert isinstance(slow.__cause__.__cause__, httpx_module.ReadTimeout)


def test_only_plain_lean_clients_are_prepared(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        async def key() -> str:
            return "rotating"

        transport = LeanAsyncHTTPTransport()
        client = openai.AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key=key,
                                    http_client=openai.DefaultAsyncHttpxClient(transport=transport))
        assert prepare(client, transport, "/chat/completions") is None  # per-request auth: client.post
        await client.close()
        monkeypatch.setenv("AGENTPLAN_HTTP_CLIENT", "aiohttp")
        conn = connection("http://127.0.0.1:9/v1")
        conn.client()
        assert conn._chat_post is None
        await conn.aclose()

    run_async(scenario())
