"""The worker's run observation: the event log to ``<app-id>-events`` and OpenTelemetry traces over OTLP.

Tracing is off unless the standard OpenTelemetry variables ask for an OTLP endpoint
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``; ``OTEL_SDK_DISABLED=true`` or
``OTEL_TRACES_EXPORTER=none`` turn it off again). Then spans go out over OTLP http/protobuf through a
batch processor (``OTEL_BSP_*``, ``OTEL_EXPORTER_OTLP_*`` as the SDK reads them), with
``service.name`` from ``OTEL_SERVICE_NAME``, else the app id. Without them OpenTelemetry is not imported.

Trace context: an input record's W3C ``traceparent``/``tracestate`` headers are kept in its
:class:`~worker.records.RecordMeta` and written on every record the run produces (outputs, dead
letters); with tracing on, the run's span becomes the parent written instead, so a trace crosses
services. Runs replayed after a crash: spans describe attempts. A killed attempt's spans are partial
or lost with the process; the attempt whose effects a transaction committed gets a child span
``agentfleet.commit`` naming the transaction.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable
from typing import Any, cast

from agentplan.exceptions import AgentPlanError
from agentplan.runtime.observe import Observation, build_observation
from worker.checkpoint.checkpoint import Checkpoint
from worker.exceptions import ConfigurationError
from worker.records import EngineKey, RecordMeta

__all__ = ["WorkerObservation", "tracer_provider_from_env"]

logger = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"


def _tracing_requested(environ: dict[str, str] | os._Environ[str]) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() in ("none", ""):
        return False
    return bool(environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def tracer_provider_from_env(service_name: str, environ: dict[str, str] | None = None) -> Any:
    """An SDK tracer provider exporting over OTLP http/protobuf, or None when tracing is not requested."""
    env = os.environ if environ is None else environ
    if not _tracing_requested(env):
        return None
    exporter_kind = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if exporter_kind != "otlp":
        raise ConfigurationError("OTEL_TRACES_EXPORTER", f"only otlp is supported, got {exporter_kind!r}")
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = env.get(name)
        if protocol and protocol.strip() != "http/protobuf":
            raise ConfigurationError(name, f"only http/protobuf is supported, got {protocol!r}")
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise ConfigurationError("OTEL_EXPORTER_OTLP_ENDPOINT", f"tracing is configured but OpenTelemetry is not "
                                 f"installed ({exc.name}): pip install 'kafka-agent-fleet[otel]'") from None
    attributes = {} if env.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def _key_text(engine_key: Hashable) -> str:
    return cast(EngineKey, engine_key)[1].decode("utf-8", "replace")


def _source(meta: Any) -> dict[str, Any]:
    m = cast(RecordMeta, meta)
    return {"topic": m.topic, "partition": m.partition, "offset": m.offset}


def _carrier(meta: Any) -> dict[str, str] | None:
    m = cast(RecordMeta, meta)
    if m.traceparent is None:
        return None
    carrier = {TRACEPARENT: m.traceparent.decode("ascii", "replace")}
    if m.tracestate is not None:
        carrier[TRACESTATE] = m.tracestate.decode("ascii", "replace")
    return carrier


def _adopt_run_span(meta: Any, carrier: dict[str, str], span_context: Any) -> None:
    """The run's span becomes the parent its outputs carry on."""
    m = cast(RecordMeta, meta)
    m.traceparent = carrier[TRACEPARENT].encode()
    state = carrier.get(TRACESTATE)
    m.tracestate = state.encode() if state else None
    m.run_span = span_context


class WorkerObservation:
    """Builds the engine's :class:`Observation` for a worker and marks committed runs in the trace."""

    def __init__(self, agent_config: Any, agent_name: str, app_id: str) -> None:
        """Reads and checks the agent configuration's event-log keys (a bad one is a ConfigurationError)."""
        from agentplan.eventlog import EventLogSettings

        try:
            self.event_log = EventLogSettings.from_config(agent_config).enabled
        except AgentPlanError as exc:
            raise ConfigurationError("agent-config", str(exc)) from None
        self._config = agent_config
        self._agent_name = agent_name
        self._app_id = app_id
        self.provider: Any = None
        self._tracer: Any = None

    def start(self) -> Observation | None:
        """The engine's hook (None when neither the event log nor tracing is on); starts the exporter."""
        self.provider = tracer_provider_from_env(self._app_id)
        if self.provider is not None:
            from agentplan.tracing import TRACER_NAME

            self._tracer = self.provider.get_tracer(TRACER_NAME)
            logger.info("OpenTelemetry traces on: OTLP http/protobuf to %s",
                        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
        return build_observation(self._config, self._agent_name, tracer_provider=self.provider,
                                 describe_key=_key_text, describe_input=_source, carrier_of=_carrier,
                                 on_run_span=_adopt_run_span)

    def committed(self, checkpoint: Checkpoint) -> None:
        """Mark each run attempt whose end this transaction committed (a child span of its run span)."""
        if self._tracer is None:
            return
        from opentelemetry import trace

        for delta in checkpoint.deltas:
            skipped = {id(meta) for meta in delta.skipped}
            for meta in delta.finished:
                span_context = getattr(meta, "run_span", None)
                if span_context is None or id(meta) in skipped:
                    continue
                parent = trace.set_span_in_context(trace.NonRecordingSpan(span_context))
                self._tracer.start_span("agentfleet.commit", context=parent,
                                        attributes={"agentfleet.transaction.id": checkpoint.name}).end()

    def shutdown(self) -> None:
        """Export what is left (bounded by the SDK's export timeout)."""
        if self.provider is not None:
            self.provider.shutdown()
