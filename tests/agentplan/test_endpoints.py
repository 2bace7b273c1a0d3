"""The model-endpoint registry: health transitions, rate-limited warnings, redaction."""

from __future__ import annotations

import logging

import pytest

from agentplan.endpoints import EndpointRegistry, redact_url

LOGGER = "agentplan.endpoints"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def test_failing_endpoint_warns_once_then_reminds_per_interval_then_recovers(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    registry = EndpointRegistry(warn_interval_s=60.0, clock=clock, wall=clock)
    endpoint = registry.endpoint("http://127.0.0.1:9/v1", "OPENAI_BASE_URL")
    (status,) = registry.statuses()
    assert status.up and status.failures == 0 and status.last_error is None
    caplog.set_level(logging.DEBUG, LOGGER)

    for _ in range(50):  # fifty failed requests within the interval: one line, not fifty
        endpoint.failed("cannot reach the model server: ConnectError: [Errno 111] Connection refused")
        clock.now += 0.5
    (first,) = warnings(caplog)
    assert "http://127.0.0.1:9/v1" in first and "OPENAI_BASE_URL" in first and "Connection refused" in first
    (status,) = registry.statuses()
    assert not status.up and status.failures == 50 and status.since == 1001.0  # down at the 3rd failure
    assert status.last_error is not None and "Connection refused" in status.last_error

    clock.now += 37  # 61 s after the first warning
    endpoint.failed("model request timed out")
    assert len(warnings(caplog)) == 2
    assert "still failing after 61s and 51 failed requests" in warnings(caplog)[1]

    endpoint.succeeded()
    endpoint.succeeded()
    assert len(warnings(caplog)) == 3
    assert "answers again after 61s and 51 failed requests" in warnings(caplog)[2]
    (status,) = registry.statuses()
    assert status.up and status.failures == 0 and status.since == clock.now
    assert status.last_error == "model request timed out"  # kept for the operator after recovery


def test_one_endpoint_per_url_and_the_first_source_is_kept() -> None:
    registry = EndpointRegistry()
    a = registry.endpoint("http://h:1/v1", "OPENAI_BASE_URL")
    b = registry.endpoint("http://user:pw@h:1/v1?key=s3cret", "the api_base_url argument")
    assert a is b
    (status,) = registry.statuses()
    assert status.url == "http://h:1/v1" and status.source == "OPENAI_BASE_URL"
    registry.clear()
    assert registry.statuses() == []


@pytest.mark.parametrize(("url", "expected"), [
    ("https://user:secret@api.example.com/v1?api-key=k#frag", "https://api.example.com/v1"),
    ("http://[::1]:8000/v1", "http://[::1]:8000/v1"),
    ("http://127.0.0.1:8000/v1/", "http://127.0.0.1:8000/v1/"),
])
def test_redact_url_drops_credentials_and_query(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_isolated_failures_do_not_take_the_endpoint_down(caplog: pytest.LogCaptureFixture) -> None:
    registry = EndpointRegistry(failures_to_down=3)
    endpoint = registry.endpoint("http://h/v1", "OPENAI_BASE_URL")
    caplog.set_level(logging.DEBUG, LOGGER)
    for _ in range(5):  # two failures, an answer: never three in a row
        endpoint.failed("model server error 500")
        endpoint.failed("model server error 500")
        endpoint.succeeded()
    (status,) = registry.statuses()
    assert status.up and status.failures == 0 and status.last_error == "model server error 500"
    assert warnings(caplog) == []
    for _ in range(3):
        endpoint.failed("model server error 500")
    assert not registry.statuses()[0].up and len(warnings(caplog)) == 1
