"""The LLM stub alone under load: requests/s and latency with ``wrk`` when installed, else an asyncio client."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cluster import StubProcess
from bench.peers.peer_common import percentile

_BODY = json.dumps({"model": "stub", "messages": [
    {"role": "system", "content": "Analyze the sentiment of the given text and classify it."},
    {"role": "user", "content": "Input text: I love this product! It exceeded my expectations."}]})
_WRK_SCRIPT = f"""wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{_BODY}'
"""


def measure(workers: int, connections: int, seconds: float) -> dict[str, Any]:
    """Start a stub with ``workers`` processes and load it for ``seconds``."""
    stub = StubProcess(0, workers)
    try:
        if shutil.which("wrk"):
            row = _wrk(stub.port, connections, seconds)
        else:
            row = asyncio.run(_python_client(stub.port, connections, seconds))
    finally:
        stub.stop()
    return {"workers": workers, "connections": connections, **row}


def _wrk(port: int, connections: int, seconds: float) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_WRK_SCRIPT)
    try:
        out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{max(1, int(seconds))}s", "--latency", "-s",
                              script.name, f"http://127.0.0.1:{port}/v1/chat/completions"],
                             capture_output=True, text=True, timeout=seconds + 60).stdout
    finally:
        Path(script.name).unlink(missing_ok=True)
    rate = re.search(r"Requests/sec:\s*([0-9.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    return {"generator": "wrk", "requests_per_s": round(float(rate.group(1))) if rate else None,
            "p50_ms": _wrk_ms(out, "50%"), "p99_ms": _wrk_ms(out, "99%"),
            "errors": int(errors.group(1)) if errors else 0}


def _wrk_ms(out: str, label: str) -> float | None:
    match = re.search(rf"^\s*{re.escape(label)}\s+([0-9.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    if not match:
        return None
    value, unit = float(match.group(1)), match.group(2)
    return round(value / 1000 if unit == "us" else value * 1000 if unit == "s" else value, 2)


async def _python_client(port: int, connections: int, seconds: float) -> dict[str, Any]:
    """Keep-alive HTTP/1.1 clients, one request at a time each (what wrk does, slower)."""
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(_BODY)}\r\n\r\n{_BODY}").encode()
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.monotonic() < deadline:
                began = time.monotonic()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"content-length:\s*(\d+)", head, re.IGNORECASE).group(1))  # type: ignore
                await reader.readexactly(length)
                latencies.append((time.monotonic() - began) * 1000)
        finally:
            writer.close()

    began = time.monotonic()
    await asyncio.gather(*(client() for _ in range(connections)))
    elapsed = time.monotonic() - began
    return {"generator": "asyncio client", "requests_per_s": round(len(latencies) / elapsed),
            "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99), "errors": 0}


def run(workers: list[int], connections: list[int], seconds: float) -> dict[str, Any]:
    rows = [measure(w, c, seconds) for w in workers for c in connections]
    return {"generator": rows[0]["generator"] if rows else "", "rows": rows}
