"""Run a checked :class:`~agentplan.skill.bash_policy.CommandList` without a shell.

Each simple command is started from its argv; pipes join the commands of a pipeline; ``;``,
``&&`` and ``||`` decide on the exit status of the pipeline before. The environment holds only
PATH, LANG and LC_ALL and HOME (the worker's secrets stay out); every process gets its own session
so a timeout kills it whole. Output is capped: beyond ``output_limit`` bytes a stream is drained
and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import Any

from agentplan.skill.bash_policy import CommandList, Pipeline, search_path

_ENV_KEYS = ("LANG", "LC_ALL")


def _child_env(cwd: Path) -> dict[str, str]:
    env = {k: os.environ[k] for k in _ENV_KEYS if k in os.environ}
    env["PATH"] = search_path()
    env["HOME"] = str(cwd)
    return env


class _Capture:
    """Reads one pipe to its end, keeping the first ``limit`` bytes."""

    def __init__(self, fd: int, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.dropped = 0
        self._fd = fd

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=2**20)
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                                   os.fdopen(self._fd, "rb", 0))
        try:
            while chunk := await reader.read(65536):
                room = self.limit - len(self.data)
                self.data += chunk[:max(room, 0)]
                self.dropped += max(len(chunk) - max(room, 0), 0)
        finally:
            transport.close()

    def text(self) -> str:
        out = self.data.decode("utf-8", errors="replace")
        return out + (f"\n[... {self.dropped} more bytes dropped]" if self.dropped else "")


async def run_command_list(commands: CommandList, cwd: Path, timeout_s: float, output_limit: int) -> dict[str, Any]:
    """``{"exit_code", "stdout", "stderr"}`` (plus ``"timed_out": true`` when the time ran out)."""
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    stdout, stderr = _Capture(out_read, output_limit), _Capture(err_read, output_limit)
    readers = [asyncio.ensure_future(stdout.run()), asyncio.ensure_future(stderr.run())]
    started: list[asyncio.subprocess.Process] = []
    env = _child_env(cwd)
    timed_out = False
    status = 0
    try:
        async def run_all() -> int:
            code = await _pipeline(commands.first, cwd, env, out_write, err_write, started)
            for operator, pipeline in commands.rest:
                if (operator == "&&" and code != 0) or (operator == "||" and code == 0):
                    continue
                code = await _pipeline(pipeline, cwd, env, out_write, err_write, started)
            return code

        try:
            status = await asyncio.wait_for(run_all(), timeout_s)
        except asyncio.TimeoutError:
            timed_out = True
    finally:
        for proc in started:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        os.close(out_write)
        os.close(err_write)
        # Bounded: a killed process group leaves no writer behind; a detached grandchild could.
        await asyncio.wait(readers, timeout=2.0)
        for reader in readers:
            reader.cancel()
    result: dict[str, Any] = {"exit_code": None if timed_out else status, "stdout": stdout.text(),
                              "stderr": stderr.text()}
    if timed_out:
        result["timed_out"] = True
        result["stderr"] += f"\n[killed after {timeout_s:g} s]"
    return result


async def _pipeline(pipeline: Pipeline, cwd: Path, env: dict[str, str], out_fd: int, err_fd: int,
                    started: list[asyncio.subprocess.Process]) -> int:
    procs: list[asyncio.subprocess.Process] = []
    stdin_fd: int | None = None
    try:
        for i, command in enumerate(pipeline.commands):
            last = i == len(pipeline.commands) - 1
            next_read, write_fd = (None, out_fd) if last else os.pipe()
            stdout_target: int = write_fd
            stderr_target: int = err_fd
            if command.stdout_devnull:
                stdout_target = asyncio.subprocess.DEVNULL
            if command.stderr_devnull:
                stderr_target = asyncio.subprocess.DEVNULL
            if command.stderr_to_stdout:
                stderr_target = stdout_target
            if command.stdout_to_stderr:
                stdout_target = stderr_target
            try:
                proc = await asyncio.create_subprocess_exec(
                    *command.argv, stdin=stdin_fd if stdin_fd is not None else asyncio.subprocess.DEVNULL,
                    stdout=stdout_target, stderr=stderr_target, cwd=cwd, env=env, start_new_session=True)
            except OSError as exc:
                os.write(err_fd, f"{command.argv[0]}: {exc.strerror or exc}\n".encode())
                proc = None
            finally:
                if stdin_fd is not None:
                    os.close(stdin_fd)
                if not last:
                    os.close(write_fd)
            stdin_fd = next_read
            if proc is not None:
                procs.append(proc)
                started.append(proc)
            elif last:
                return 127
        codes = [await proc.wait() for proc in procs]
        return codes[-1] if codes else 127
    finally:
        if stdin_fd is not None:
            os.close(stdin_fd)
