"""Run a broker child process (or several) in the foreground until Ctrl-C or SIGTERM.

Shared by ``agentfleet broker`` for both engines: the signal handling and the watch for a child that
dies on its own are the same whatever the broker is.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from types import FrameType

from worker.exceptions import EmbeddedBrokerError

__all__ = ["run_until_signal"]


def run_until_signal(start: Callable[[], Sequence[subprocess.Popen[bytes]]], ready_line: Callable[[], str],
                     stop: Callable[[], None], died: Callable[[subprocess.Popen[bytes]], str]) -> None:
    """``start()`` the children, print ``ready_line()``, wait for a signal, then ``stop()``.

    Raises EmbeddedBrokerError with ``died(child)`` when a child exits on its own first.
    """
    stop_requested = threading.Event()
    signalled = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        signalled.set()
        stop_requested.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        children = start()
        for child in children:
            threading.Thread(target=_wake_on_exit, args=(child, stop_requested), name=f"watch-{child.pid}",
                             daemon=True).start()
        print(ready_line(), flush=True)
        stop_requested.wait()
        if not signalled.is_set():
            raise EmbeddedBrokerError(died(next(c for c in children if c.poll() is not None)))
    finally:
        stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _wake_on_exit(child: subprocess.Popen[bytes], stop_requested: threading.Event) -> None:
    # Wakes the main thread if a child dies, so it never waits on a dead broker.
    child.wait()
    stop_requested.set()
