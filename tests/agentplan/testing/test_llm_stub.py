"""Tests for the OpenAI-compatible stub server, driven through the real ``openai`` client."""

from __future__ import annotations

import asyncio
import http.client
import json
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from agentplan.testing.llm_stub import (
    MALFORMED_CONTENT,
    StubLLMServer,
    StubReply,
    default_responder,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
SENTIMENT_SYSTEM = "You are a sentiment analysis assistant. Reply with JSON."

SENTIMENT_CASES = [
    ("I love this product! It exceeded my expectations.", "positive"),
    ("Terrible experience, the product broke after one day.", "negative"),
    ("It's okay, nothing special but does the job.", "neutral"),
    ("Absolutely amazing! Best purchase I've made this year.", "positive"),
    ("Disappointed with the quality, would not recommend.", "negative"),
    ("我今天真的很开心", "positive"),
    ("今天丢了10块钱哎", "negative"),
]


@pytest.fixture
def server() -> Iterator[StubLLMServer]:
    with StubLLMServer() as srv:
        yield srv


def client_for(srv: StubLLMServer, timeout: float = 10.0) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url, api_key="test", max_retries=0, timeout=timeout)


def ask(client: openai.OpenAI, content: str, model: str = "gpt-test", **kwargs: Any) -> Any:
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], **kwargs
    )


def tool_message(call_id: str, content: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def raw_request(
    srv: StubLLMServer, method: str, path: str, body: bytes | None = None
) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


# --------------------------------------------------------------------------- default answers


@pytest.mark.parametrize(("text", "expected"), SENTIMENT_CASES)
def test_default_sentiment(server: StubLLMServer, text: str, expected: str) -> None:
    with client_for(server) as client:
        resp = client.chat.completions.create(
            model="gpt-test",
            messages=[
                {"role": "system", "content": SENTIMENT_SYSTEM},
                {"role": "user", "content": f"Input text: {text}"},
            ],
        )
    result = json.loads(resp.choices[0].message.content)
    assert result["sentiment"] == expected
    assert result["confidence"] == (0.6 if expected == "neutral" else 0.9)
    assert result["key_phrases"]
    assert resp.model == "gpt-test"
    assert resp.choices[0].finish_reason == "stop"


def test_sentiment_without_marker_and_reasoning_prefix() -> None:
    request = {
        "model": "stub-reasoning-1",
        "messages": [
            {"role": "system", "content": "Classify the SENTIMENT."},
            {"role": "user", "content": "The worst support ever."},
        ],
    }
    content = default_responder(request).content
    assert content is not None
    assert content.startswith("<think>stub reasoning</think>")
    payload = json.loads(content.removeprefix("<think>stub reasoning</think>"))
    assert payload == {"sentiment": "negative", "confidence": 0.9, "key_phrases": ["worst"]}


def test_neutral_key_phrases_are_first_words() -> None:
    reply = default_responder(
        {"messages": [{"role": "user", "content": "sentiment? Input text: It's okay, nothing new"}]}
    )
    assert json.loads(reply.content or "")["key_phrases"] == ["It's", "okay", "nothing"]


def test_echo_usage_and_determinism(server: StubLLMServer) -> None:
    with client_for(server) as client:
        first = ask(client, "hello there")
        second = ask(client, "hello there")
    assert first.choices[0].message.content == "echo: hello there"
    assert first.choices[0].message.role == "assistant"
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.usage is not None
    assert first.usage.prompt_tokens == len("hello there") // 4 + 1
    assert first.usage.completion_tokens == len("echo: hello there") // 4 + 1
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    assert first.object == "chat.completion"


def test_tool_directive_then_tool_result(server: StubLLMServer) -> None:
    directive = '[[tool:get_weather {"city": "Paris", "days": [1, 2]}]]'
    user = {"role": "user", "content": f"Weather? {directive}"}
    with client_for(server) as client:
        resp = client.chat.completions.create(model="m", messages=[user])
        choice = resp.choices[0]
        assert choice.finish_reason == "tool_calls"
        calls = choice.message.tool_calls
        assert calls is not None and len(calls) == 1
        assert calls[0].function.name == "get_weather"
        assert json.loads(calls[0].function.arguments) == {"city": "Paris", "days": [1, 2]}
        seq = server.requests[-1]["seq"]
        assert calls[0].id == f"call_{seq}_0"

        assistant = {
            "role": "assistant",
            "content": None,
            "tool_calls": [c.model_dump() for c in calls],
        }
        follow = client.chat.completions.create(
            model="m",
            messages=[user, assistant, tool_message(calls[0].id, '{"temp": 21}')],
        )
        assert follow.choices[0].finish_reason == "stop"
        assert follow.choices[0].message.content == '{"temp": 21}'
        assert not follow.choices[0].message.tool_calls

        plain = client.chat.completions.create(
            model="m",
            messages=[user, assistant, tool_message(calls[0].id, "sunny")],
        )
        assert json.loads(plain.choices[0].message.content or "") == {"result": "sunny"}


def test_tool_loop_keeps_calling(server: StubLLMServer) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "go [[tool-loop:search]]"}]
    with client_for(server) as client:
        for _ in range(3):
            resp = client.chat.completions.create(model="m", messages=messages)
            calls = resp.choices[0].message.tool_calls
            assert calls is not None and calls[0].function.name == "search"
            assert json.loads(calls[0].function.arguments) == {}
            call = calls[0].model_dump()
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            messages.append(tool_message(calls[0].id, '{"hits": 0}'))


def test_json_directive_verbatim(server: StubLLMServer) -> None:
    raw = '{"answer": 42, "nested": [[1, 2]], "s": "a]]b"}'
    with client_for(server) as client:
        resp = ask(client, f"Please reply [[json {raw}]] thanks")
    assert resp.choices[0].message.content == raw


def test_custom_responder_and_streaming() -> None:
    def responder(request: dict[str, Any]) -> StubReply:
        return StubReply(content=f"custom:{len(request['messages'])}", tool_calls=[("f", {"x": 1})])

    with StubLLMServer(responder=responder) as srv, client_for(srv) as client:
        resp = ask(client, "hi")
        assert resp.choices[0].message.content == "custom:1"
        assert resp.choices[0].message.tool_calls[0].id == "call_1_0"

        chunks = list(ask(client, "hi", stream=True, stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "custom:1"
        finish = [c.choices[0].finish_reason for c in chunks if c.choices]
        finish = [f for f in finish if f]
        assert finish == ["tool_calls"]
        assert chunks[-1].usage is not None


def test_slow_stream_spaces_its_events() -> None:
    delay_s = 0.1
    with StubLLMServer(stream_delay_ms=delay_s * 1000) as srv, client_for(srv) as client:
        arrivals: list[tuple[float, str]] = []
        for chunk in ask(client, "x" * 40, stream=True):  # role, 3 content deltas, finish
            arrivals.append((time.monotonic(), chunk.choices[0].delta.content or ""))
        assert "".join(text for _, text in arrivals) == "echo: " + "x" * 40
        assert len(arrivals) == 5
        # Each event is written delay_s after the one before: the last comes >= 4 delays after the first.
        assert arrivals[-1][0] - arrivals[0][0] >= 3.5 * delay_s
        srv.set_stream_delay(0)
        started = time.monotonic()
        assert "".join(c.choices[0].delta.content or "" for c in ask(client, "fast", stream=True)) == "echo: fast"
        assert time.monotonic() - started < 4 * delay_s
    with pytest.raises(ValueError):
        StubLLMServer(stream_delay_ms=-1)


# --------------------------------------------------------------------------- faults


def test_fault_429_exposes_retry_after(server: StubLLMServer) -> None:
    server.retry_after_s = 1.5
    server.fail_next(1, "429")
    with client_for(server) as client:
        with pytest.raises(openai.RateLimitError) as info:
            ask(client, "x")
        assert info.value.status_code == 429
        assert info.value.response.headers["retry-after"] == "2"
        assert info.value.response.headers["retry-after-ms"] == "1500"
        body = info.value.body
        assert isinstance(body, dict) and body["code"] == "rate_limit_exceeded"
        assert ask(client, "after").choices[0].message.content == "echo: after"


def test_rate_limit_answers_429_with_the_wait_for_the_next_slot() -> None:
    with StubLLMServer(rate_limit=4) as srv, client_for(srv) as client:  # 4/s, a bucket of 4
        for i in range(4):
            assert ask(client, f"burst {i}").choices[0].message.content == f"echo: burst {i}"
        with pytest.raises(openai.RateLimitError) as info:
            ask(client, "too soon")
        wait_ms = int(info.value.response.headers["retry-after-ms"])
        assert 1 <= wait_ms <= 250 and info.value.response.headers["retry-after"] == "1"
        time.sleep(wait_ms / 1000)  # the server said when: waiting that long is the point of the test
        assert ask(client, "on time").choices[0].message.content == "echo: on time"
        stats = srv.stats()
        assert stats["by_status"] == {"200": 5, "429": 1} and stats["by_fault"] == {"rate_limit": 1}
        srv.set_rate_limit(0)
        assert all(ask(client, f"free {i}") for i in range(5))
    with pytest.raises(ValueError, match="rate_limit must be >= 0"):
        StubLLMServer(rate_limit=-1)


@pytest.mark.parametrize("fault", ["500", "503"])
def test_fault_server_errors(server: StubLLMServer, fault: str) -> None:
    server.fail_next(2, fault)
    with client_for(server) as client:
        for _ in range(2):
            with pytest.raises(openai.InternalServerError) as info:
                ask(client, "x")
            assert info.value.status_code == int(fault)
        assert ask(client, "ok").choices[0].message.content == "echo: ok"


def test_fault_timeout() -> None:
    with StubLLMServer(timeout_hang_s=5) as srv:
        srv.fail_next(1, "timeout")
        with client_for(srv, timeout=0.5) as client:
            with pytest.raises(openai.APITimeoutError):
                ask(client, "slow")
            assert ask(client, "fast").choices[0].message.content == "echo: fast"
        assert [(r["fault"], r["status"]) for r in srv.requests] == [("timeout", 0), (None, 200)]
        # The client gave up and closed its connection: the hanging request is no longer in flight.
        # Nothing signals that to the test thread, so poll with a deadline.
        deadline = time.monotonic() + 5
        while srv.stats()["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert srv.stats()["in_flight"] == 0


def test_fault_timeout_released_by_stop() -> None:
    srv = StubLLMServer(timeout_hang_s=30).start()
    srv.fail_next(1, "timeout")
    errors: list[BaseException] = []

    def call() -> None:
        with client_for(srv, timeout=20) as client:
            try:
                ask(client, "hang")
            except BaseException as exc:  # noqa: BLE001 - inspected below
                errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    assert srv.wait_for_requests(1, timeout=10)
    assert srv.stats()["in_flight"] == 1
    srv.stop()
    caller.join(10)
    assert not caller.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], openai.APIConnectionError)


def test_fault_malformed_json(server: StubLLMServer) -> None:
    server.fail_next(1, "malformed_json")
    with client_for(server) as client:
        resp = ask(client, "[[json {\"a\": 1}]]")
    content = resp.choices[0].message.content
    assert content == MALFORMED_CONTENT
    with pytest.raises(json.JSONDecodeError):
        json.loads(content)
    assert server.requests[-1]["status"] == 200
    assert server.requests[-1]["fault"] == "malformed_json"


def test_fault_disconnect(server: StubLLMServer) -> None:
    server.fail_next(1, "disconnect")
    with client_for(server) as client:
        with pytest.raises(openai.APIConnectionError):
            ask(client, "x")
        assert ask(client, "again").choices[0].message.content == "echo: again"


def test_refuse_and_accept_connections_same_port(server: StubLLMServer) -> None:
    port = server.port
    with client_for(server, timeout=5) as client:
        assert ask(client, "before").choices[0].message.content == "echo: before"
        server.refuse_connections()
        with pytest.raises(openai.APIConnectionError):
            ask(client, "during")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        server.accept_connections()
        assert server.port == port
        assert ask(client, "after").choices[0].message.content == "echo: after"

        with server.outage(), pytest.raises(openai.APIConnectionError):
            ask(client, "down")
        assert ask(client, "up").choices[0].message.content == "echo: up"


def test_refuse_drops_open_connections(server: StubLLMServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/healthz")
    assert conn.getresponse().read()
    server.refuse_connections()
    # The kept-alive socket was closed by the server: reading from it yields EOF.
    assert conn.sock is not None
    assert conn.sock.recv(1) == b""
    conn.close()
    server.accept_connections()


def test_error_rate_one_gives_only_server_errors() -> None:
    with StubLLMServer(error_rate=1.0, seed=7) as srv, client_for(srv) as client:
        statuses = []
        for _ in range(12):
            with pytest.raises(openai.InternalServerError) as info:
                ask(client, "x")
            statuses.append(info.value.status_code)
        assert set(statuses) <= {500, 503}
        assert [r["status"] for r in srv.requests] == statuses
        srv.set_error_rate(0.0)
        assert ask(client, "fine").choices[0].message.content == "echo: fine"


def test_fail_next_rejects_unknown_fault(server: StubLLMServer) -> None:
    with pytest.raises(ValueError):
        server.fail_next(1, "418")
    with pytest.raises(ValueError):
        server.set_error_rate(1.5)


# --------------------------------------------------------------------------- concurrency


def test_latency_does_not_serialize_requests() -> None:
    async def run(srv: StubLLMServer) -> list[str]:
        async with openai.AsyncOpenAI(
            base_url=srv.base_url, api_key="test", max_retries=0, timeout=10
        ) as client:
            responses = await asyncio.gather(
                *(
                    client.chat.completions.create(
                        model="m", messages=[{"role": "user", "content": f"n{i}"}]
                    )
                    for i in range(50)
                )
            )
        return [r.choices[0].message.content or "" for r in responses]

    with StubLLMServer(latency_ms=300) as srv:
        started = time.monotonic()
        contents = asyncio.run(run(srv))
        elapsed = time.monotonic() - started
    assert sorted(contents) == sorted(f"echo: n{i}" for i in range(50))
    assert elapsed < 5.0  # serialized would take 15 s


def test_set_latency_applies(server: StubLLMServer) -> None:
    server.set_latency(200)
    with client_for(server) as client:
        started = time.monotonic()
        ask(client, "x")
        assert time.monotonic() - started >= 0.2
    assert server.stats()["latency_ms"] == 200


# --------------------------------------------------------------------------- request log


def test_request_log_records_seq_status_fault(server: StubLLMServer) -> None:
    server.fail_next(1, "503")
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    with client_for(server) as client:
        with pytest.raises(openai.InternalServerError):
            ask(client, "first needle")
        ask(client, "second needle", tools=tools, response_format={"type": "json_object"})
        ask(client, "third")
    log = server.requests
    assert [(r["seq"], r["status"], r["fault"]) for r in log] == [
        (1, 503, "503"),
        (2, 200, None),
        (3, 200, None),
    ]
    assert log[1]["model"] == "gpt-test"
    assert log[1]["messages"] == [{"role": "user", "content": "second needle"}]
    assert log[1]["tools"] == tools
    assert log[1]["response_format"] == {"type": "json_object"}
    assert log[0]["tools"] is None
    assert server.request_count == 3
    assert server.count_matching("needle") == 1
    assert server.count_matching("needle", ok_only=False) == 2

    stats = server.stats()
    assert stats["chat_requests"] == 3
    assert stats["by_status"] == {"503": 1, "200": 2}

    server.clear_log()
    assert server.request_count == 0 and server.requests == []


def test_wait_for_requests(server: StubLLMServer) -> None:
    def send() -> None:
        with client_for(server) as client:
            for i in range(3):
                ask(client, f"bg{i}")

    worker = threading.Thread(target=send)
    worker.start()
    try:
        assert server.wait_for_requests(3, timeout=10)
        assert server.request_count >= 3
        assert not server.wait_for_requests(100, timeout=0.05)
    finally:
        worker.join(10)


# --------------------------------------------------------------------------- raw HTTP


def test_http_endpoints_and_errors(server: StubLLMServer) -> None:
    assert raw_request(server, "GET", "/healthz") == (200, {"status": "ok"})
    status, models = raw_request(server, "GET", "/v1/models")
    assert status == 200 and models["data"][0]["id"]
    status, err = raw_request(server, "GET", "/v1/nope")
    assert status == 404 and err["error"]["type"] == "invalid_request_error"
    status, err = raw_request(server, "POST", "/v1/chat/completions", b"{not json")
    assert status == 400 and "error" in err
    body = json.dumps({"model": "x", "messages": [{"role": "user", "content": "alt"}]}).encode()
    status, resp = raw_request(server, "POST", "/chat/completions", body)
    assert status == 200 and resp["choices"][0]["message"]["content"] == "echo: alt"
    status, stats = raw_request(server, "GET", "/stats")
    assert status == 200 and stats["by_status"] == {"400": 1, "200": 1}


def test_keep_alive_reuses_connection(server: StubLLMServer) -> None:
    body = json.dumps({"model": "x", "messages": [{"role": "user", "content": "k"}]}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        headers = {"Content-Type": "application/json"}
        conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
        first = conn.getresponse()
        assert first.status == 200 and first.getheader("Connection") != "close"  # HTTP/1.1: kept alive by default
        first.read()
        sock = conn.sock
        conn.request("GET", "/healthz")
        second = conn.getresponse()
        assert second.status == 200
        second.read()
        assert conn.sock is sock
    finally:
        conn.close()


# --------------------------------------------------------------------------- lifecycle / CLI


def test_stop_frees_port() -> None:
    srv = StubLLMServer().start()
    port = srv.port
    with client_for(srv) as client:
        ask(client, "x")  # leave a pooled keep-alive connection open
        srv.stop()
    assert srv._thread is not None and not srv._thread.is_alive()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    with StubLLMServer(port=port) as again:
        assert again.port == port
        assert raw_request(again, "GET", "/healthz")[0] == 200


def test_cli_prints_ready_line_and_serves() -> None:
    command = [sys.executable, "-m", "agentplan.testing.llm_stub", "--port", "0"]
    with subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        stdout = proc.stdout
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True)
        reader.start()
        try:
            line = lines.get(timeout=20).strip()
            assert line.startswith("llm-stub listening on http://127.0.0.1:"), line
            base_url = line.removeprefix("llm-stub listening on ")
            port = int(base_url.rsplit(":", 1)[1].split("/", 1)[0])
            assert base_url == f"http://127.0.0.1:{port}/v1"
            with openai.OpenAI(
                base_url=base_url, api_key="test", max_retries=0, timeout=10
            ) as client:
                assert ask(client, "cli").choices[0].message.content == "echo: cli"
        finally:
            proc.terminate()
            try:
                _, stderr = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, stderr = proc.communicate(timeout=10)
            reader.join(10)
    assert proc.returncode == 0, stderr


def test_follow_up_turn_repeats_json_and_sentiment_answers() -> None:
    """An agent re-asking after unparseable output gets the directive's answer again."""
    retry = {"role": "user", "content": "That reply was not valid. Reply again with only the JSON object."}
    json_request = {"messages": [
        {"role": "user", "content": 'Judge [[json {"label": "ok"}]]'},
        {"role": "assistant", "content": MALFORMED_CONTENT}, retry]}
    assert default_responder(json_request).content == '{"label": "ok"}'
    sentiment_request = {"messages": [
        {"role": "system", "content": "Classify the sentiment."},
        {"role": "user", "content": "Input text: I love it"},
        {"role": "assistant", "content": MALFORMED_CONTENT}, retry]}
    assert json.loads(default_responder(sentiment_request).content or "")["key_phrases"] == ["love"]


def test_cli_workers_share_the_port_and_exit_with_the_parent() -> None:
    """``--workers 2``: two processes answer on one port (SO_REUSEPORT); stopping the parent stops both."""
    command = [sys.executable, "-m", "agentplan.testing.llm_stub", "--port", "0", "--workers", "2",
               "--no-request-log"]
    with subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        assert proc.stdout is not None
        stdout = proc.stdout
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=30).strip()
            assert line.startswith("llm-stub listening on http://127.0.0.1:") and "(2 processes)" in line, line
            port = int(line.split("127.0.0.1:", 1)[1].split("/", 1)[0])
            pids = set()
            for _ in range(64):  # each new connection is hashed to one of the two listeners
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                try:
                    conn.request("POST", "/v1/chat/completions", body=json.dumps(
                        {"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
                    answer = conn.getresponse()
                    assert answer.status == 200 and json.loads(answer.read())["choices"]
                    conn.request("GET", "/stats")
                    stats = json.loads(conn.getresponse().read())
                finally:
                    conn.close()
                assert stats["chat_requests"] >= 1
                pids.add(stats["pid"])
                if len(pids) == 2:
                    break
            assert len(pids) == 2 and proc.pid in pids
        finally:
            proc.terminate()
            try:
                _, stderr = proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    deadline = time.monotonic() + 10
    refused = False
    while not refused and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            time.sleep(0.05)
        except ConnectionRefusedError:
            refused = True
    assert refused, "a stub worker process outlived its parent"
