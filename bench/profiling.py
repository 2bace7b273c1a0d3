"""Sample a worker with py-spy while a scenario runs and summarise where its time goes."""

from __future__ import annotations

import collections
import logging
import shutil
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


def py_spy() -> str | None:
    """The py-spy binary (the ``bench`` extra installs it next to the interpreter)."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Profiler:
    """``py-spy record --format raw`` attached to a pid; :meth:`finish` returns the top frames."""

    def __init__(self, pid: int, seconds: float, out: Path, rate: int = 200) -> None:
        self.out = out
        binary = py_spy()
        self.proc: subprocess.Popen[bytes] | None = None
        if binary is None:
            logger.warning("py-spy not found; install the bench extra to profile")
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [binary, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))), "--rate", str(rate),
             "--format", "raw", "--nonblocking", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def finish(self, top: int = 25) -> dict[str, list[tuple[str, float]]] | None:
        if self.proc is None:
            return None
        try:
            _, err = self.proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            return None
        if not self.out.exists():
            logger.warning("py-spy wrote no profile: %s", err.decode(errors="replace")[-500:])
            return None
        return summarise(self.out, top)


def summarise(collapsed: Path, top: int = 40) -> dict[str, list[tuple[str, float]]]:
    """Shares of samples (idle excluded) by function (self and inclusive) and by source file (self).

    Line numbers are dropped so a function's samples add up; asyncio resumes coroutines from the
    loop, so a stack may start at the coroutine rather than at ``main``.
    """
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    files: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack.strip() or not count_text.isdigit():
            continue
        count = int(count_text)
        raw = [f for f in stack.split(";") if f.strip() and not f.strip().startswith(("process ", "thread "))]
        if not raw:
            continue
        frames = [_function(f) for f in raw]
        total += count
        own[frames[-1][0]] += count
        files[frames[-1][1]] += count
        packages[_package(raw[-1])] += count
        for name in {name for name, _ in frames}:
            inclusive[name] += count
    if not total:
        return {"samples": [("total", 0.0)], "self": [], "inclusive": [], "files": []}

    def shares(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * c / total, 1)) for name, c in counter.most_common(top)]

    return {"samples": [("total", float(total))], "self": shares(own), "inclusive": shares(inclusive),
            "files": shares(files), "packages": shares(packages)}


_HTTP_STACK = {"httpx", "httpx2", "httpcore", "httpcore2", "h11", "anyio", "sniffio", "certifi"}


def _package(frame: str) -> str:
    """The top-level package of a frame's code (py-spy prints paths relative to their sys.path entry)."""
    path = frame.strip().partition(" (")[2].rstrip(")").rsplit(":", 1)[0]
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    name = path.split("/", 1)[0] if "/" in path else path.removesuffix(".py")
    return f"{name} (HTTP client)" if name in _HTTP_STACK else name


def _function(frame: str) -> tuple[str, str]:
    """``func (path/to/pkg/module.py:123)`` -> (``func (pkg/module.py)``, ``pkg/module.py``)."""
    name, _, where = frame.strip().partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    short = "/".join(path.split("/")[-2:]) if path else "?"
    return (f"{name} ({short})" if where else name), short
