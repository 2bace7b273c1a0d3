"""The static checks (ruff, mypy) as subprocesses, started as soon as pytest knows it will run them.

mypy takes ~20 s of CPU on an empty cache, and the suite spends much of its time waiting on brokers and
workers: started when collection finishes (tests/conftest.py), it runs on the otherwise idle core while
the first tests run, and tests/test_static_checks.py only collects its result.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[1]
TOOLS = {"ruff": ["ruff", "check", "."], "mypy": ["mypy"]}
TIMEOUT_S = 600


class StaticCheck:
    """One tool's run; its output goes to a temporary file, so a long report cannot fill a pipe."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._output: IO[str] = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 - closed by stop()
        self._process = subprocess.Popen([sys.executable, "-m", *TOOLS[name]], cwd=REPO, text=True,
                                         stdin=subprocess.DEVNULL, stdout=self._output, stderr=subprocess.STDOUT)

    def result(self) -> tuple[int, str]:
        """Wait for the tool; its exit code and the end of its report."""
        code = self._process.wait(timeout=TIMEOUT_S)
        self._output.seek(0)
        return code, self._output.read()[-8000:]

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=30)
        self._output.close()


_started: dict[str, StaticCheck] = {}


def start(name: str) -> None:
    if name not in _started:
        _started[name] = StaticCheck(name)


def result(name: str) -> tuple[int, str]:
    start(name)  # not started early (the test selected some other way): run it now
    return _started[name].result()


def stop_all() -> None:
    for check in _started.values():
        check.stop()
    _started.clear()
