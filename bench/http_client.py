"""CPU per model call and throughput of each HTTP stack under the openai client, side by side in one run.

``python -m bench.http_client [--calls 8000] [--latency-ms 200] [--concurrency 1024] [--rounds 3]``
(``BENCH_STACKS=paired``: only ``aiohttp`` and ``lean``, the two the 1.3x rule compares)

Every stack drives the same call as ``OpenAIChatModelConnection.chat`` (``AsyncOpenAI.post`` of a
chat request, body parsed by ``parse_chat_completion``) against the LLM stub in its own process:

* ``aiohttp``: openai's ``DefaultAioHttpClient`` (aiohttp's connector; limit = the calls in flight);
* ``httpx``: the SDK's ``DefaultAsyncHttpxClient`` with limits tuned to the in-flight calls, HTTP/1.1;
* ``httpx-64-pools``: the same spread round-robin over 64 pools of limit/64 connections each;
* ``httpx-h2``: the same with ``http2=True``, only when ``h2`` is installed *and* the stub speaks
  HTTP/2 (it does not: over cleartext httpx then stays on HTTP/1.1, so the row is skipped);
* ``lean``: agentplan's own asyncio transport, ``agentplan.integrations._lean_http``.

Reported per stack: CPU ms of this process per call (``time.process_time``: the stub's CPU is not
counted) and calls/s (wall clock). Each round runs every stack once, in an order rotated per round,
so drift on a shared machine hits all of them alike; the table shows the median over rounds and the
spread (min-max).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import openai

from agentplan.integrations.openai import httpx_module, parse_chat_completion

_SYSTEM = "Analyze the sentiment of the given text and classify it as positive, negative or neutral."
_BODY = {"model": "stub", "messages": [
    {"role": "system", "content": _SYSTEM},
    {"role": "user", "content": "Input text: I love this product! It exceeded my expectations."}]}
TIMEOUT_S = 60.0


@contextlib.contextmanager
def stub_process(latency_ms: float, workers: int) -> Iterator[str]:
    """The LLM stub (``python -m agentplan.testing.llm_stub``) in a child process; yields its base URL.

    Its own process, so its CPU is not counted as the client's. Stopped (and reaped) on exit.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "agentplan.testing.llm_stub", "--port", str(port),
                             "--latency-ms", str(latency_ms), "--no-request-log", "--workers", str(workers)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if "listening" not in line:
            raise RuntimeError(f"llm stub did not start: {line}")
        # Keep draining its output so a chatty stub never blocks on a full pipe.
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _limits(limit: int) -> Any:
    # Sized for the calls in flight: the SDK's default (1000) would queue the rest in the pool.
    return httpx_module.Limits(max_connections=limit, max_keepalive_connections=limit)


def _aiohttp(limit: int) -> Any:
    return openai.DefaultAioHttpClient(timeout=TIMEOUT_S, limits=_limits(limit))


def _httpx(limit: int, http2: bool = False) -> Any:
    return openai.DefaultAsyncHttpxClient(timeout=TIMEOUT_S, limits=_limits(limit), http2=http2)


def _httpx_sharded(limit: int, shards: int = 64) -> Any:
    """httpx over ``shards`` pools, round-robin: httpcore's pool walks all its connections on every
    request and response, so one pool's CPU per call grows with the calls in flight."""
    per_shard = max(1, -(-limit // shards))
    pools = [httpx_module.AsyncHTTPTransport(limits=_limits(per_shard)) for _ in range(shards)]

    class Sharded(httpx_module.AsyncBaseTransport):
        def __init__(self) -> None:
            self._next = 0

        async def handle_async_request(self, request: Any) -> Any:
            self._next = (self._next + 1) % shards
            return await pools[self._next].handle_async_request(request)

        async def aclose(self) -> None:
            for pool in pools:
                await pool.aclose()

    return openai.DefaultAsyncHttpxClient(timeout=TIMEOUT_S, transport=Sharded())


def _lean(limit: int) -> Any:
    from agentplan.integrations._lean_http import LeanAsyncHTTPTransport

    return openai.DefaultAsyncHttpxClient(transport=LeanAsyncHTTPTransport(max_connections=limit),
                                          timeout=TIMEOUT_S)


def stacks() -> dict[str, Callable[[int], Any]]:
    """The stacks this environment can run, by name."""
    found: dict[str, Callable[[int], Any]] = {}
    if importlib.util.find_spec("aiohttp") is not None:
        found["aiohttp"] = _aiohttp
    if os.environ.get("BENCH_STACKS") != "paired":  # paired: only the two the 1.3x rule compares
        found["httpx"] = _httpx
        found["httpx-64-pools"] = _httpx_sharded
    found["lean"] = _lean
    return found


async def _measure(base_url: str, name: str, factory: Callable[[int], Any], calls: int,
                   concurrency: int) -> dict[str, Any]:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=TIMEOUT_S,
                                http_client=factory(concurrency))
    remaining = 0

    async def caller() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            response = await client.post("/chat/completions", body=_BODY, cast_to=httpx_module.Response)
            if not parse_chat_completion(response.content, "stub").message.content:
                raise RuntimeError(f"{name}: empty answer from the stub")

    try:
        remaining = concurrency  # warm up: open the connections
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        remaining = calls
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await client.close()
    return {"stack": name, "cpu_ms_per_call": cpu / calls * 1000, "calls_per_s": calls / wall}


def run(calls: int, latency_ms: float, concurrency: int, rounds: int, stub_workers: int) -> list[dict[str, Any]]:
    available = stacks()
    names = list(available)
    samples: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    with stub_process(latency_ms, stub_workers) as base_url:
        for round_ in range(rounds):
            order = names[round_ % len(names):] + names[:round_ % len(names)]
            for name in order:
                sample = asyncio.run(_measure(base_url, name, available[name], calls, concurrency))
                samples[name].append(sample)
                print(f"round {round_ + 1}/{rounds} {name}: {sample['cpu_ms_per_call']:.3f} CPU ms/call, "
                      f"{sample['calls_per_s']:.0f} calls/s", file=sys.stderr, flush=True)
    rows = []
    for name in names:
        cpu = [s["cpu_ms_per_call"] for s in samples[name]]
        rate = [s["calls_per_s"] for s in samples[name]]
        rows.append({"stack": name, "latency_ms": latency_ms, "concurrency": concurrency, "calls": calls,
                     "rounds": rounds, "cpu_ms_per_call": [round(c, 4) for c in cpu],
                     "calls_per_s": [round(r) for r in rate],
                     "cpu_median": round(statistics.median(cpu), 4), "rate_median": round(statistics.median(rate))})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| stack | CPU ms/call, median (min-max) | calls/s, median (min-max) | CPU vs best other |",
             "|---|---|---|---|"]
    for row in rows:
        others = [r["cpu_median"] for r in rows if r is not row]
        relative = f"{min(others) / row['cpu_median']:.2f}x" if others else "-"
        cpu, rate = row["cpu_ms_per_call"], row["calls_per_s"]
        lines.append(f"| {row['stack']} | {row['cpu_median']:.3f} ({min(cpu):.3f}-{max(cpu):.3f}) | "
                     f"{row['rate_median']} ({min(rate)}-{max(rate)}) | {relative} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_client", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=8000, help="measured calls per stack and round")
    parser.add_argument("--latency-ms", type=float, default=200, help="the stub's answer latency")
    parser.add_argument("--concurrency", type=int, default=1024, help="calls in flight")
    parser.add_argument("--rounds", type=int, default=3, help="runs per stack, interleaved")
    parser.add_argument("--stub-workers", type=int, default=1, help="stub processes (its --workers)")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = parser.parse_args(argv)
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the stub process is stopped, not orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rows = run(args.calls, args.latency_ms, args.concurrency, args.rounds, args.stub_workers)
    print(json.dumps(rows, indent=2) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
