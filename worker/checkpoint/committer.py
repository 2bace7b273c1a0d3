"""The thread that closes exactly-once transactions while the worker's event loop goes on.

A single-thread executor, but on a daemon thread: a ThreadPoolExecutor's threads are joined when
the interpreter exits, so a close that librdkafka keeps blocked for good (see
``Checkpointer.stuck_call``) would keep the process from ever exiting. The worker abandons such a
thread together with its fenced producer and starts a new committer.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class Committer:
    """Runs submitted calls one at a time, in order, on one daemon thread."""

    def __init__(self, name: str = "committer") -> None:
        self._calls: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = \
            queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, call: Callable[..., T], *args: Any) -> Future[T]:
        future: Future[T] = Future()
        self._calls.put((future, call, args))
        return future

    def shutdown(self) -> None:
        """Finish the calls already submitted, then end the thread (without waiting for it)."""
        self._calls.put(None)

    def _run(self) -> None:
        while (item := self._calls.get()) is not None:
            future, call, args = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(call(*args))
                except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
                    future.set_exception(exc)
