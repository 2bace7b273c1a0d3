"""The counting agent with its model endpoint under a limiter (importable by worker subprocesses)."""

from __future__ import annotations

import os

from agentplan import OpenAIChatModelConnection, ResourceDescriptor, chat_model_connection
from tests.worker.integration.agents import CountingAgent


class LimitedCountingAgent(CountingAgent):
    """CountingAgent whose connection adapts its concurrency (``max_concurrency``); a fleet-wide
    ``requests_per_minute`` when ``LIMITS_TEST_RPM`` is set."""

    @chat_model_connection
    @staticmethod
    def llm() -> ResourceDescriptor:
        rpm = os.environ.get("LIMITS_TEST_RPM")
        return ResourceDescriptor(clazz=OpenAIChatModelConnection, timeout=5.0, max_concurrency=64,
                                  requests_per_minute=float(rpm) if rpm else None)
