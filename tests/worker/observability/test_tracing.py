"""The worker's tracing set-up from OTEL_* variables, trace-context headers, and event-log misconfiguration
failing at start-up naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.exceptions import ConfigurationError
from worker.observability.tracing import tracer_provider_from_env
from worker.records import RecordMeta, source_headers, trace_context

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}


@pytest.mark.parametrize("environ", [{}, {**ENDPOINT, "OTEL_SDK_DISABLED": "true"},
                                     {**ENDPOINT, "OTEL_TRACES_EXPORTER": "none"}])
def test_tracing_is_off_unless_an_otlp_endpoint_is_set(environ: dict[str, str]) -> None:
    assert tracer_provider_from_env("app", environ) is None


def test_an_otlp_endpoint_gives_a_provider_named_after_the_app() -> None:
    provider = tracer_provider_from_env("app-1", {**ENDPOINT, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://h:1/v1/traces"})
    try:
        assert provider.resource.attributes["service.name"] == "app-1"
    finally:
        provider.shutdown()


@pytest.mark.parametrize(("environ", "setting"), [
    ({**ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
    ({**ENDPOINT, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
    ({**ENDPOINT, "OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
])
def test_unsupported_exporters_fail_naming_the_variable(environ: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        tracer_provider_from_env("app", environ)
    assert info.value.setting == setting


def test_trace_context_is_read_from_input_headers_and_written_on_outputs() -> None:
    parent = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert trace_context([("other", b"x"), ("traceparent", parent), ("tracestate", b"k=v")]) == (parent, b"k=v")
    assert trace_context([("other", b"x")]) == (None, None)
    meta = RecordMeta("in", 0, 5, 0, b"k")
    assert all(name != "traceparent" for name, _ in source_headers(meta, "app", "txn"))
    meta.traceparent, meta.tracestate = parent, b"k=v"
    assert source_headers(meta, "app", "txn")[-2:] == [("traceparent", parent), ("tracestate", b"k=v")]


def test_a_bad_event_log_setting_stops_the_worker_before_it_starts(tmp_path: Path) -> None:
    from worker.config import WorkerSettings
    from worker.runtime import Worker

    config = tmp_path / "agent.yaml"
    config.write_text("event-log.level: LOUD\n")
    settings = WorkerSettings.load(env={}, agent="tests.worker.integration.agents:PoisonAgent", input_topic="in",
                                   output_topic="out", agent_config=config, metrics_port=-1)
    with pytest.raises(ConfigurationError) as info:
        Worker(settings)
    assert str(info.value) == "agent-config: event-log.level: expected OFF, STANDARD or VERBOSE, got 'LOUD'"
