"""BrokerWatch: outage noticed from librdkafka's error callback, probed with back-off, bounded."""

from __future__ import annotations

import asyncio
import logging

import pytest
from confluent_kafka import KafkaError

from worker.exceptions import BrokerUnreachableError
from worker.kafka.outage import PROBE_INITIAL_S, BrokerWatch


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Probe:
    def __init__(self) -> None:
        self.reachable = False
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if not self.reachable:
            raise ConnectionError("refused")


async def settle(watch: BrokerWatch) -> None:
    """Let a started probe task finish (it runs the probe in a thread)."""
    while watch._probing is not None:
        await asyncio.sleep(0.001)


def test_outage_is_held_probed_with_backoff_and_ends_on_a_successful_probe():
    async def scenario() -> None:
        clock, probe = Clock(), Probe()
        watch = BrokerWatch("b:9092", timeout_s=60, probe=probe, clock=clock)
        watch.on_client_error(KafkaError(KafkaError._TRANSPORT))
        assert not watch.down  # one refused connection is not an outage
        watch.on_client_error(KafkaError(KafkaError._ALL_BROKERS_DOWN))
        assert watch.down
        watch.check()
        await settle(watch)
        assert probe.calls == 0  # first probe only after PROBE_INITIAL_S
        clock.now += PROBE_INITIAL_S
        watch.check()
        await settle(watch)
        assert probe.calls == 1 and watch.down
        clock.now += PROBE_INITIAL_S  # back-off doubled: not due yet
        watch.check()
        await settle(watch)
        assert probe.calls == 1
        clock.now += PROBE_INITIAL_S
        probe.reachable = True
        watch.check()
        await settle(watch)
        assert probe.calls == 2 and not watch.down
        assert watch.take_recovery() and not watch.take_recovery()

    asyncio.run(scenario())


def test_outage_past_the_deadline_raises_naming_the_setting(caplog: pytest.LogCaptureFixture):
    async def scenario() -> None:
        clock = Clock()
        watch = BrokerWatch("b:9092", timeout_s=30, probe=Probe(), clock=clock)
        with caplog.at_level(logging.WARNING, logger="worker.kafka.outage"):
            watch.on_client_error(KafkaError(KafkaError._ALL_BROKERS_DOWN))
        # How to change the limit: the worker's real flag and variable (both exist: see test_cli_help).
        assert "(--broker-unreachable-timeout-s / AGENTFLEET_BROKER_UNREACHABLE_TIMEOUT_S)" in caplog.text
        clock.now += 30
        watch.check()  # exactly at the limit: still waiting
        await settle(watch)
        clock.now += 1
        with pytest.raises(BrokerUnreachableError, match=r"^broker-unreachable-timeout-s: Kafka at b:9092") as raised:
            watch.check()
        assert "--broker-unreachable-timeout-s / AGENTFLEET_BROKER_UNREACHABLE_TIMEOUT_S" in str(raised.value)

    asyncio.run(scenario())
