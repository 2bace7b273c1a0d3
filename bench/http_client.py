"""CPU per chat call of each HTTP transport the openai connection can use, side by side in one run.

``python -m bench.http_client [--calls 6000] [--concurrency 1,64,256] [--stub-workers 1]``

Each transport (``AGENTPLAN_HTTP_CLIENT``: ``httpx`` = stock httpx2 transport sharded over 64 pools,
``aiohttp`` if installed, ``lean`` = agentplan.integrations.http_transport) makes the same calls
through ``OpenAIChatModelConnection.chat`` to the LLM stub (0 ms latency, its own process), with
``concurrency`` calls in flight. Reported: CPU ms of this process per call (``time.process_time``,
so the stub's CPU is not counted) and calls/s (wall clock; on a small machine the stub shares
the cores, so calls/s understates what a dedicated client would reach). Transports take turns
within each concurrency level so that drift on a shared machine hits all of them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

from agentplan import ChatMessage, MessageRole, OpenAIChatModelConnection
from bench.cluster import StubProcess

TRANSPORTS = ("httpx", "aiohttp", "lean")
_SYSTEM = "Analyze the sentiment of the given text and classify it as positive, negative or neutral."
_MESSAGES = [ChatMessage(role=MessageRole.SYSTEM, content=_SYSTEM),
             ChatMessage(role=MessageRole.USER, content="Input text: I love this product! It exceeded my expectations.")]


def available_transports() -> list[str]:
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return [t for t in TRANSPORTS if t != "aiohttp"]
    return list(TRANSPORTS)


async def _measure(base_url: str, transport: str, calls: int, concurrency: int) -> dict[str, Any]:
    os.environ["AGENTPLAN_HTTP_CLIENT"] = transport
    connection = OpenAIChatModelConnection(api_base_url=base_url, api_key="bench", max_retries=0, timeout=30.0)
    remaining = calls

    async def caller() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            result = await connection.chat(_MESSAGES, model="stub")
            if not result.message.content:
                raise RuntimeError(f"{transport}: empty answer from the stub")

    try:
        remaining = min(calls, max(200, concurrency * 2))  # warm up: open the connections
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        remaining = calls
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await connection.aclose()
    return {"transport": transport, "concurrency": concurrency, "calls": calls,
            "cpu_ms_per_call": round(cpu / calls * 1000, 4), "calls_per_s": round(calls / wall)}


def run(calls: int, concurrency: list[int], stub_workers: int, rounds: int) -> list[dict[str, Any]]:
    transports = available_transports()
    stub = StubProcess(0, stub_workers)
    rows: list[dict[str, Any]] = []
    previous = os.environ.get("AGENTPLAN_HTTP_CLIENT")
    try:
        for level in concurrency:
            samples: dict[str, list[dict[str, Any]]] = {t: [] for t in transports}
            for round_ in range(rounds):
                order = transports if round_ % 2 == 0 else transports[::-1]
                for transport in order:
                    samples[transport].append(asyncio.run(_measure(stub.base_url, transport, calls, level)))
            for transport in transports:
                best = min(samples[transport], key=lambda row: row["cpu_ms_per_call"])
                rows.append({**best, "rounds": rounds})
    finally:
        stub.stop()
        if previous is None:
            os.environ.pop("AGENTPLAN_HTTP_CLIENT", None)
        else:
            os.environ["AGENTPLAN_HTTP_CLIENT"] = previous
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["| concurrency | transport | CPU ms/call | calls/s | CPU vs httpx |", "|---|---|---|---|---|"]
    baseline = {row["concurrency"]: row["cpu_ms_per_call"] for row in rows if row["transport"] == "httpx"}
    for row in rows:
        ratio = baseline.get(row["concurrency"])
        relative = f"{row['cpu_ms_per_call'] / ratio:.2f}x" if ratio else "-"
        lines.append(f"| {row['concurrency']} | {row['transport']} | {row['cpu_ms_per_call']:.3f} | "
                     f"{row['calls_per_s']} | {relative} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_client", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=6000, help="measured calls per transport and level")
    parser.add_argument("--concurrency", default="1,64,256", help="comma-separated calls in flight")
    parser.add_argument("--stub-workers", type=int, default=1, help="stub processes (its --workers)")
    parser.add_argument("--rounds", type=int, default=2, help="runs per transport and level; the best is kept")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = parser.parse_args(argv)
    rows = run(args.calls, [int(c) for c in args.concurrency.split(",")], args.stub_workers, args.rounds)
    print(json.dumps(rows, indent=2) if args.json else _table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
