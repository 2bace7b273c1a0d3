"""OpenTelemetry spans of runs, actions, model calls and tool calls, named by the GenAI semantic conventions.

Imported only when tracing is on: ``opentelemetry-api`` is optional (the ``otel`` extra). Spans:

* ``invoke_agent <agent>`` per run attempt (``gen_ai.operation.name=invoke_agent``, ``gen_ai.agent.name``,
  the key, the run id, ``agentfleet.run.resumed`` when the attempt resumes a run restored from state),
  a child of the W3C trace context its input carried, if any;
* ``action <name>`` per action attempt, child of the run span;
* ``chat <model>`` per model call (kind CLIENT; ``gen_ai.request.model``, ``gen_ai.response.model``,
  ``gen_ai.usage.input_tokens``/``output_tokens``, ``gen_ai.response.finish_reasons``), ``execute_tool
  <tool>`` per tool call, ``durable_call <function>`` per other durable call: children of the action span.

A call whose result a replay takes from the journal is not made again, so it has no span.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from agentplan.chat_models import ChatResult
from agentplan.events import Event
from agentplan.runtime.observe import ObservedAction, ObservedCall, ObservedRun, RunSink

__all__ = ["GenAITracingSink", "PROPAGATOR", "TRACER_NAME"]

TRACER_NAME = "agentplan"
#: W3C trace context (traceparent/tracestate) only, whatever global propagator the process set.
PROPAGATOR = TraceContextTextMapPropagator()

Carrier = dict[str, str]


def _end(span: Span | None, error: BaseException | None) -> None:
    if span is None:
        return
    if error is not None:
        cause = getattr(error, "cause", None)
        shown = cause if isinstance(cause, BaseException) else error
        span.set_attribute("error.type", type(shown).__name__)
        span.set_status(Status(StatusCode.ERROR, str(shown)[:500]))
    span.end()


class GenAITracingSink(RunSink):
    """Starts and ends the spans; exporting them is the tracer provider's business."""

    def __init__(self, tracer_provider: Any, agent_name: str,
                 carrier_of: Callable[[Any], Carrier | None] = lambda meta: None,
                 on_run_span: Callable[[Any, Carrier, Any], None] | None = None) -> None:
        """``carrier_of(meta)``: the trace-context headers an input arrived with; ``on_run_span(meta, carrier,
        span_context)``: told the run span's context, for the driver to propagate to the run's outputs."""
        self._tracer = trace.get_tracer(TRACER_NAME, tracer_provider=tracer_provider)
        self.agent_name = agent_name
        self._carrier_of = carrier_of
        self._on_run_span = on_run_span

    def run_started(self, run: ObservedRun, input_event: Event | None) -> None:
        carrier = self._carrier_of(run.meta) if run.meta is not None else None
        parent = PROPAGATOR.extract(carrier) if carrier else None
        attributes: dict[str, Any] = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": self.agent_name,
                                      "agentfleet.key": run.key_text, "agentfleet.run.id": run.run_id,
                                      "agentfleet.run.resumed": run.resumed}
        source = run.source()
        if "topic" in source:
            attributes.update({"messaging.system": "kafka", "messaging.destination.name": source["topic"],
                               "messaging.destination.partition.id": str(source.get("partition")),
                               "messaging.kafka.offset": source.get("offset", -1)})
        span = self._tracer.start_span(f"invoke_agent {self.agent_name}", context=parent, kind=SpanKind.INTERNAL,
                                       attributes=attributes)
        run.span = span
        context = span.get_span_context()
        run.trace_id = format(context.trace_id, "032x")
        if self._on_run_span is not None and run.meta is not None:
            out: Carrier = {}
            PROPAGATOR.inject(out, context=trace.set_span_in_context(span))
            self._on_run_span(run.meta, out, context)

    def run_finished(self, run: ObservedRun, error: BaseException | None) -> None:
        _end(run.span, error)

    def run_cancelled(self, run: ObservedRun) -> None:
        if run.span is not None:
            run.span.set_attribute("agentfleet.run.cancelled", True)
            run.span.end()

    def action_started(self, action: ObservedAction) -> None:
        action.span = self._tracer.start_span(
            f"action {action.name}", context=trace.set_span_in_context(action.run.span),
            attributes={"agentfleet.action.name": action.name, "agentfleet.action.attempt": action.attempt,
                        "agentfleet.event.id": action.event.id, "agentfleet.event.type": type(action.event).__name__})

    def action_finished(self, action: ObservedAction, emitted: Sequence[Event], error: BaseException | None) -> None:
        _end(action.span, error)

    def call_started(self, call: ObservedCall) -> None:
        parent = trace.set_span_in_context(call.action.span)
        if call.kind == "chat":
            attributes: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.request.model": call.name}
            provider = _provider(call.attributes.get("setup"))
            if provider:
                attributes["gen_ai.provider.name"] = provider
            call.span = self._tracer.start_span(f"chat {call.name}", context=parent, kind=SpanKind.CLIENT,
                                                attributes=attributes)
        elif call.kind == "execute_tool":
            attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": call.name,
                          "gen_ai.tool.type": "function"}
            if call.attributes.get("call_id"):
                attributes["gen_ai.tool.call.id"] = str(call.attributes["call_id"])
            call.span = self._tracer.start_span(f"execute_tool {call.name}", context=parent, attributes=attributes)
        else:
            call.span = self._tracer.start_span(f"durable_call {call.name}", context=parent,
                                                attributes={"agentfleet.durable.function": call.name})

    def call_finished(self, call: ObservedCall, result: Any, error: BaseException | None) -> None:
        span = call.span
        if span is not None and isinstance(result, ChatResult):
            if result.model:
                span.set_attribute("gen_ai.response.model", result.model)
            span.set_attribute("gen_ai.usage.input_tokens", result.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", result.completion_tokens)
            if result.finish_reason:
                span.set_attribute("gen_ai.response.finish_reasons", [result.finish_reason])
        _end(span, error)


def _provider(setup: Any) -> str | None:
    """The connection's ``provider_name`` (``openai`` for the OpenAI-compatible one), if it declares one."""
    try:
        connection = setup.connection if setup is not None else None
    except Exception:  # noqa: BLE001 - a broken reference fails the call itself, not its span
        return None
    name = getattr(connection, "provider_name", None)
    return name if isinstance(name, str) else None
