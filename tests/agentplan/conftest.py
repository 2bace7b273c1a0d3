"""Factory fixtures for agentplan tests: a live LLM stub and environments bound to it.

LLM calls go over HTTP to :class:`StubLLMServer` through the real ``openai`` client; nothing
is mocked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agentplan import LocalExecutionEnvironment, ResourceType
from agentplan.testing.llm_stub import StubLLMServer
from tests.agentplan.support import CONNECTION, make_config, stub_connection

EnvFactory = Callable[..., LocalExecutionEnvironment]


@pytest.fixture
def stub_llm() -> Iterator[StubLLMServer]:
    """A started stub server, stopped after the test."""
    server = StubLLMServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_env(stub_llm: StubLLMServer) -> EnvFactory:
    """``make_env(timeout=10.0, **config)``: a local environment whose ``llm`` connection is the stub."""

    def factory(*, timeout: float = 10.0, **config: Any) -> LocalExecutionEnvironment:
        env = LocalExecutionEnvironment(config=make_config(**config))
        env.add_resource(CONNECTION, ResourceType.CHAT_MODEL_CONNECTION, stub_connection(stub_llm, timeout=timeout))
        return env

    return factory
