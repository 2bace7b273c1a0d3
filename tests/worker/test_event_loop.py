"""--event-loop: uvloop when installed (auto), the standard loop on request; a missing uvloop fails at start-up."""

from __future__ import annotations

import asyncio

import pytest

from worker import event_loop
from worker.config import WorkerSettings
from worker.event_loop import EventLoop
from worker.exceptions import ConfigurationError

REQUIRED = {"agent": "m:A", "input_topic": "in", "output_topic": "out"}


async def loop_class() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_auto_runs_on_uvloop_when_installed() -> None:
    pytest.importorskip("uvloop")
    assert event_loop.resolve(EventLoop.AUTO) is EventLoop.UVLOOP
    assert event_loop.run(loop_class(), EventLoop.AUTO).startswith("uvloop")
    assert event_loop.run(loop_class(), EventLoop.ASYNCIO).startswith("asyncio")


def test_auto_falls_back_and_uvloop_by_name_fails_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(event_loop, "uvloop_available", lambda: False)
    assert event_loop.resolve(EventLoop.AUTO) is EventLoop.ASYNCIO
    with pytest.raises(ConfigurationError, match="event-loop: uvloop is not installed"):
        event_loop.resolve(EventLoop.UVLOOP)


def test_setting_from_env_and_bad_value_named() -> None:
    settings = WorkerSettings.load(env={"AGENTFLEET_EVENT_LOOP": "asyncio"}, **REQUIRED)
    assert settings.event_loop is EventLoop.ASYNCIO
    assert WorkerSettings.load(env={}, **REQUIRED).event_loop is EventLoop.AUTO  # uvloop when installed
    with pytest.raises(ConfigurationError, match="event-loop"):
        WorkerSettings.load(env={}, event_loop="trio", **REQUIRED)
