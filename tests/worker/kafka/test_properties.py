"""Passed-through librdkafka properties reach only the client types that read them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from worker.kafka.properties import CONSUMER_ONLY, PRODUCER_ONLY, consumer_properties, producer_properties

MIXED = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "600", "linger.ms": "7", "acks": "all",
         "socket.keepalive.enable": "true", "client.id": "props-test"}


def test_each_client_type_keeps_what_it_reads_and_both_keep_the_shared_ones() -> None:
    assert consumer_properties(MIXED) == {"session.timeout.ms": "6000", "heartbeat.interval.ms": "600",
                                          "socket.keepalive.enable": "true", "client.id": "props-test"}
    assert producer_properties(MIXED) == {"linger.ms": "7", "acks": "all", "socket.keepalive.enable": "true",
                                          "client.id": "props-test"}
    assert not CONSUMER_ONLY & PRODUCER_ONLY


class _Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture()
def librdkafka_log() -> Iterator[tuple[logging.Logger, _Captured]]:
    log = logging.getLogger("tests.librdkafka")
    captured = _Captured()
    log.addHandler(captured)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log, captured
    log.removeHandler(captured)


CLIENTS: dict[str, tuple[Callable[[dict[str, Any]], Any], Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "producer": (Producer, producer_properties),
    "consumer": (lambda config: Consumer({**config, "group.id": "props-test"}), consumer_properties),
    "admin": (AdminClient, producer_properties),
}


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_librdkafka_warns_of_the_unfiltered_set_and_not_of_the_filtered_one(kafka, librdkafka_log, client) -> None:
    log, captured = librdkafka_log
    make, keep = CLIENTS[client]
    for properties, warned in ((MIXED, True), (keep(MIXED), False)):
        captured.messages.clear()
        handle = make({"bootstrap.servers": kafka.bootstrap_servers, "logger": log, **properties})
        handle.poll(0.2)  # serves the log queue, where the configuration warnings wait
        if isinstance(handle, Consumer):
            handle.close()
        assert any("CONFWARN" in m for m in captured.messages) is warned, captured.messages
