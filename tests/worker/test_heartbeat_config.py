"""Heartbeats follow the session timeout in effect, so failover detection scales with it (S6)."""

from __future__ import annotations

import pytest

from worker.config import WorkerSettings
from worker.exceptions import ConfigurationError
from worker.kafka.clients import ClientConfigs, heartbeat_interval_ms

REQUIRED = {"agent": "tests.worker.integration.agents:PoisonAgent", "input_topic": "in", "output_topic": "out"}


def test_heartbeat_is_a_tenth_of_the_session_setting() -> None:
    config = ClientConfigs(WorkerSettings.load(env={}, session_timeout_ms=8000, **REQUIRED)).consumer()
    assert config["session.timeout.ms"] == 8000 and config["heartbeat.interval.ms"] == 800
    assert heartbeat_interval_ms(WorkerSettings.load(env={}, **REQUIRED)) == 1000  # the 10 s default


def test_a_session_timeout_passed_through_sets_the_heartbeat() -> None:
    # -X session.timeout.ms=6000 arrives as a string and overrides the setting in the consumer config.
    config = ClientConfigs(WorkerSettings.load(env={}, kafka={"session.timeout.ms": "6000"}, **REQUIRED)).consumer()
    assert config["session.timeout.ms"] == "6000" and config["heartbeat.interval.ms"] == 600


def test_an_explicit_heartbeat_wins_and_short_sessions_keep_a_floor() -> None:
    settings = WorkerSettings.load(env={}, kafka={"heartbeat.interval.ms": "250"}, **REQUIRED)
    assert ClientConfigs(settings).consumer()["heartbeat.interval.ms"] == "250"
    assert heartbeat_interval_ms(WorkerSettings.load(env={}, session_timeout_ms=1000, **REQUIRED)) == 100


def test_a_session_timeout_that_is_not_a_number_names_the_property() -> None:
    settings = WorkerSettings.load(env={}, kafka={"session.timeout.ms": "6s"}, **REQUIRED)
    with pytest.raises(ConfigurationError) as info:
        heartbeat_interval_ms(settings)
    assert info.value.setting == "kafka.session.timeout.ms" and "'6s'" in info.value.message
