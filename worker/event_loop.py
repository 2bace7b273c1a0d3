"""Which asyncio event loop a worker runs on: uvloop when it is installed, else the standard library's.

The worker spends much of its CPU between calls in the loop itself (socket reads and writes of every
model call, timers, the main loop's rounds). uvloop (libuv, in C) does that work for a fraction of the
standard loop's cost; everything the worker runs on its loop (the lean HTTP transport's protocols and
timers, aiohttp, MCP clients, signal handlers, ``asyncio.to_thread``) runs on either.
"""

from __future__ import annotations

import asyncio
import enum
import importlib.util
from collections.abc import Coroutine
from typing import Any, TypeVar

from worker.exceptions import ConfigurationError

__all__ = ["EventLoop", "resolve", "run"]

T = TypeVar("T")


class EventLoop(str, enum.Enum):
    AUTO = "auto"  # uvloop when importable, else asyncio
    UVLOOP = "uvloop"
    ASYNCIO = "asyncio"


def uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def resolve(choice: EventLoop) -> EventLoop:
    """The loop ``choice`` means on this host; a missing uvloop asked for by name fails at start-up."""
    if choice is EventLoop.AUTO:
        return EventLoop.UVLOOP if uvloop_available() else EventLoop.ASYNCIO
    if choice is EventLoop.UVLOOP and not uvloop_available():
        raise ConfigurationError("event-loop", "uvloop is not installed (pip install uvloop; it has no Windows "
                                               "build); use auto or asyncio")
    return choice


def run(main: Coroutine[Any, Any, T], choice: EventLoop) -> T:
    """Run ``main`` to completion on a new loop of kind ``choice`` (like ``asyncio.run``)."""
    if resolve(choice) is EventLoop.UVLOOP:
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
