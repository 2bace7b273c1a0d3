"""Plain helpers shared by agentplan tests (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from agentplan import AgentConfiguration, OpenAIChatModelConnection, ResourceDescriptor
from agentplan.testing.llm_stub import StubLLMServer

T = TypeVar("T")

#: Name under which the stub connection is registered by the ``make_env`` fixture.
CONNECTION = "llm"

#: Settings that keep retries fast in tests; tests override what they exercise.
FAST_CONFIG: dict[str, Any] = {"retry_backoff_s": 0.01, "retry_backoff_max_s": 0.5}


def run_async(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    """Run ``coro`` on a fresh event loop, failing instead of hanging past ``timeout``."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


#: The event loops the worker may run on (``--event-loop``); timer and wake-up code is tested on both.
EVENT_LOOPS = ("asyncio", "uvloop")


def run_on_loop(kind: str, coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    """:func:`run_async` on a fresh loop of ``kind`` (``EVENT_LOOPS``); uvloop missing skips the test."""
    if kind == "uvloop":
        import pytest

        uvloop = pytest.importorskip("uvloop")
        return uvloop.run(asyncio.wait_for(coro, timeout))
    return run_async(coro, timeout)


def stub_connection(stub: StubLLMServer, *, timeout: float = 10.0) -> ResourceDescriptor:
    """A connection descriptor pointed at ``stub`` (transient retries: the engine's, per the test's configuration)."""
    return ResourceDescriptor(clazz=OpenAIChatModelConnection, api_base_url=stub.base_url, api_key="test",
                              timeout=timeout)


def make_config(**overrides: Any) -> AgentConfiguration:
    """An explicit configuration (host ``AGENTPLAN_*`` variables must not leak into tests)."""
    return AgentConfiguration(**{**FAST_CONFIG, **overrides})

