"""A small MCP server for the MCP example and tests: a tool (``add``) and prompts (``ask_sum``, ``add_many``).

Built on the official MCP SDK's own server (``MCPServer``, called ``FastMCP`` before mcp 2).
Run it over streamable HTTP (``--port``; endpoint ``http://127.0.0.1:PORT/mcp``) or over stdio
(``--stdio``). ``--call-log FILE`` appends one JSON line per ``add`` call (its arguments and the server's pid), so
tests can count the calls a server really received.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from mcp.server.mcpserver import MCPServer


def build_server(call_log: str | None) -> MCPServer:
    # CRITICAL: the SDK logs a failed request with a rich-formatted traceback, which costs seconds on a busy
    # machine; the client is told of every error anyway.
    server = MCPServer("calculator", log_level="CRITICAL")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers.

        Args:
            a: The first addend.
            b: The second addend.
        """
        if call_log:
            # O_APPEND writes of one short line are atomic: concurrent calls never interleave.
            with open(call_log, "a", encoding="utf-8") as log:
                log.write(json.dumps({"a": a, "b": b, "pid": os.getpid()}) + "\n")
        return a + b

    @server.prompt()
    def ask_sum(a: str, b: str) -> str:
        """Ask the model to add two numbers with the add tool."""
        return f"Use the add tool to add {a} and {b}, then report the sum."

    @server.prompt()
    def add_many(count: int) -> str:
        """Ask for a sum of ``count`` numbers (a number argument: no template can stand in for it)."""
        return f"Add {count} numbers with the add tool, two at a time."

    return server


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765, help="streamable HTTP port on 127.0.0.1")
    parser.add_argument("--stdio", action="store_true", help="serve over stdin/stdout instead of HTTP")
    parser.add_argument("--call-log", help="append one JSON line per add call to this file")
    args = parser.parse_args(argv)
    server = build_server(args.call_log)
    if args.stdio:
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=args.port)
    return 0


class ServerProcess:
    """The calculator server over streamable HTTP in a subprocess, started and stopped by pid."""

    def __init__(self, port: int, call_log: Path | None = None) -> None:
        self.port = port
        self.call_log = call_log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self, timeout_s: float = 20.0) -> ServerProcess:
        args = [sys.executable, "-m", "examples.mcp_agent.calculator_server", "--port", str(self.port)]
        if self.call_log is not None:
            args += ["--call-log", str(self.call_log)]
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:  # bounded: the server listens within a second or two
            if self.proc.poll() is not None:
                raise RuntimeError(f"calculator server exited with {self.proc.returncode} (port {self.port} taken?)")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"calculator server not listening on port {self.port} after {timeout_s}s")

    def stop(self) -> None:
        """SIGKILL (a crash, as far as clients can tell) and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@contextlib.contextmanager
def running_server(port: int, call_log: Path | None = None) -> Iterator[ServerProcess]:
    server_process = ServerProcess(port, call_log).start()
    try:
        yield server_process
    finally:
        server_process.stop()


if __name__ == "__main__":
    sys.exit(main())
