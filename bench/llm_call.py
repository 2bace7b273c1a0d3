"""CPU per model call of ``OpenAIChatModelConnection.chat``, the connection as agents use it.

``python -m bench.llm_call [--calls 8000] [--latency-ms 200] [--concurrency 1024] [--rounds 3]``

The whole call the chat action makes (messages converted, the request encoded and sent, the answer
parsed into a ``ChatResult``, the endpoint's health updated) against the LLM stub in its own process,
after a warm-up that opens the connections. CPU is this process's (``time.process_time``, user and
system: the kernel's loopback work for our writes counts), so the stub's is not counted.
``AGENTPLAN_HTTP_CLIENT`` picks the stack as it does for the worker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time

from agentplan.chat_message import ChatMessage, MessageRole
from agentplan.integrations.openai import OpenAIChatModelConnection
from bench.http_client import stub_process

_MESSAGES = [
    ChatMessage(role=MessageRole.SYSTEM, content="Analyze the sentiment of the given text and classify it as "
                                                 "positive, negative or neutral. Reply with JSON."),
    ChatMessage(role=MessageRole.USER, content="Input text: I love this product! It exceeded my expectations.")]


async def measure(base_url: str, calls: int, concurrency: int) -> tuple[float, float]:
    """(CPU ms per call, calls per second) of ``calls`` calls, ``concurrency`` in flight."""
    connection = OpenAIChatModelConnection(api_base_url=base_url, api_key="bench", timeout=60.0)
    remaining = 0

    async def caller() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            result = await connection.chat(_MESSAGES, model="stub")
            if not result.message.content:
                raise RuntimeError("empty answer from the stub")

    try:
        remaining = concurrency  # warm up: open the connections
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        remaining = calls
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await connection.aclose()
    return cpu / calls * 1000, calls / wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.llm_call", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=8000, help="measured calls per round")
    parser.add_argument("--latency-ms", type=float, default=200, help="the stub's answer latency")
    parser.add_argument("--concurrency", type=int, default=1024, help="calls in flight")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    stack = os.environ.get("AGENTPLAN_HTTP_CLIENT", "lean")
    samples = []
    with stub_process(args.latency_ms, 1) as base_url:
        for round_ in range(args.rounds):
            cpu, rate = asyncio.run(measure(base_url, args.calls, args.concurrency))
            samples.append(cpu)
            print(f"round {round_ + 1}/{args.rounds} ({stack}): {cpu:.3f} CPU ms/call, {rate:.0f} calls/s, "
                  f"load average {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    print(f"{stack}: median {statistics.median(samples):.3f} CPU ms per call over {args.rounds} rounds "
          f"({min(samples):.3f}-{max(samples):.3f}), {args.concurrency} in flight, {args.latency_ms:g} ms latency")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
