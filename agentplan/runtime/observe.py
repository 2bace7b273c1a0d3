"""The engine's one observation hook: runs, actions, events and durable calls, fed to sinks.

Two sinks exist: the event log (``agentplan.eventlog``) and OpenTelemetry GenAI traces
(``agentplan.tracing``). The engine holds an :class:`Observation` only when a sink is enabled; without
one its hot path pays an attribute test per action and per durable call, nothing more.

Log records are not written out by the sinks: :meth:`ObservedRun.emit` hands them to the key's slot in
the engine, where they travel with the key's state in its :class:`~agentplan.runtime.engine.KeyDelta`.
A record is emitted at the moment the engine's state changes with it (an action completes, a durable
result is journaled, a run ends), so a driver that commits deltas atomically (the Kafka worker) commits
exactly the records of the state it commits: a replayed run's records appear once.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol

from agentplan.events import Event

__all__ = ["Observation", "ObservedAction", "ObservedCall", "ObservedRun", "RunSink", "build_observation",
           "global_tracer_provider", "label_call"]


class LogOwner(Protocol):
    """Where emitted records wait for the driver (the engine's per-key slot)."""

    def add_log(self, record: dict[str, Any]) -> None: ...


class RunSink:
    """Receives what runs do. Every method is a no-op here; a sink overrides what it needs."""

    def run_started(self, run: ObservedRun, input_event: Event | None) -> None:
        """A run attempt starts; ``input_event`` is None when it resumes a run restored from state."""

    def run_finished(self, run: ObservedRun, error: BaseException | None) -> None:
        """The run ended (``error`` when it failed)."""

    def run_cancelled(self, run: ObservedRun) -> None:
        """The attempt stopped without ending (its key was revoked or the engine closed)."""

    def action_started(self, action: ObservedAction) -> None: ...

    def action_finished(self, action: ObservedAction, emitted: Sequence[Event], error: BaseException | None) -> None:
        """One attempt of an action ended; ``emitted`` are the events it sent (empty when it failed)."""

    def call_started(self, call: ObservedCall) -> None: ...

    def call_finished(self, call: ObservedCall, result: Any, error: BaseException | None) -> None:
        """A durable call ran (it is not called for results replayed from the journal)."""


class Observation:
    """The hook the engine calls; fans out to its sinks, in order (tracing before the event log, so log
    records can name the trace)."""

    def __init__(self, sinks: Sequence[RunSink], describe_key: Callable[[Hashable], str] = repr,
                 describe_input: Callable[[Any], dict[str, Any]] = lambda meta: {}) -> None:
        """``describe_key`` renders a key as its user knows it; ``describe_input`` says where an input came
        from (the worker: topic, partition, offset), from the driver's opaque input ``meta``."""
        self.sinks = tuple(sinks)
        self.describe_key = describe_key
        self.describe_input = describe_input

    def start_run(self, owner: LogOwner, key: Hashable, run_id: str, meta: Any,
                  input_event: Event | None) -> ObservedRun:
        run = ObservedRun(self, owner, key, run_id, meta, resumed=input_event is None)
        for sink in self.sinks:
            sink.run_started(run, input_event)
        return run


class ObservedRun:
    """One attempt of a run, as the sinks see it."""

    __slots__ = ("observation", "owner", "key", "key_text", "run_id", "meta", "resumed", "started",
                 "started_wall", "span", "trace_id")

    def __init__(self, observation: Observation, owner: LogOwner, key: Hashable, run_id: str, meta: Any,
                 resumed: bool) -> None:
        self.observation = observation
        self.owner = owner
        self.key = key
        self.key_text = observation.describe_key(key)
        self.run_id = run_id
        self.meta = meta
        self.resumed = resumed
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.span: Any = None  # the tracing sink's run span
        self.trace_id: str | None = None  # set by the tracing sink, named in log records

    def emit(self, record: dict[str, Any]) -> None:
        """Queue a log record with the key's state (see the module docstring)."""
        self.owner.add_log(record)

    def source(self) -> dict[str, Any]:
        return self.observation.describe_input(self.meta) if self.meta is not None else {}

    def start_action(self, name: str, event: Event, attempt: int) -> ObservedAction:
        action = ObservedAction(self, name, event, attempt)
        for sink in self.observation.sinks:
            sink.action_started(action)
        return action

    def finish(self, error: BaseException | None) -> None:
        for sink in self.observation.sinks:
            sink.run_finished(self, error)

    def cancel(self) -> None:
        for sink in self.observation.sinks:
            sink.run_cancelled(self)


class ObservedAction:
    """One attempt of one action on one event."""

    __slots__ = ("run", "name", "event", "attempt", "started", "started_wall", "span", "label")

    def __init__(self, run: ObservedRun, name: str, event: Event, attempt: int) -> None:
        self.run = run
        self.name = name
        self.event = event
        self.attempt = attempt
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.span: Any = None
        # What the next durable call is (set by label_call): (kind, name, attributes).
        self.label: tuple[str, str, dict[str, Any]] | None = None

    def finish(self, emitted: Sequence[Event], error: BaseException | None) -> None:
        for sink in self.run.observation.sinks:
            sink.action_finished(self, emitted, error)

    def start_call(self, fn: Callable[..., Any]) -> ObservedCall:
        label, self.label = self.label, None
        if label is None:
            label = ("durable_call", getattr(fn, "__qualname__", type(fn).__name__), {})
        call = ObservedCall(self, *label)
        for sink in self.run.observation.sinks:
            sink.call_started(call)
        return call

    def replayed_call(self) -> None:
        """The next durable call's result came from the journal: no call, and its label is spent."""
        self.label = None


class ObservedCall:
    """A durable call as it runs: an LLM call (kind ``chat``), a tool call (``execute_tool``) or a user's
    ``durable_execute`` (``durable_call``)."""

    __slots__ = ("action", "kind", "name", "attributes", "started", "started_wall", "span")

    def __init__(self, action: ObservedAction, kind: str, name: str, attributes: dict[str, Any]) -> None:
        self.action = action
        self.kind = kind
        self.name = name
        self.attributes = attributes
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.span: Any = None

    def finish(self, result: Any, error: BaseException | None) -> None:
        for sink in self.action.run.observation.sinks:
            sink.call_finished(self, result, error)


def label_call(ctx: Any, kind: str, name: str, **attributes: Any) -> None:
    """Say what the next ``ctx.durable_execute*`` call of this action is (built-in actions: a model call
    or a tool call); a no-op when nothing observes the run."""
    action: ObservedAction | None = getattr(ctx, "observation", None)
    if action is not None:
        action.label = (kind, name, attributes)


def build_observation(config: Any, agent_name: str, *, tracer_provider: Any = None,
                      describe_key: Callable[[Hashable], str] = repr,
                      describe_input: Callable[[Any], dict[str, Any]] = lambda meta: {},
                      carrier_of: Callable[[Any], dict[str, str] | None] | None = None,
                      on_run_span: Callable[[Any, dict[str, str], Any], None] | None = None) -> Observation | None:
    """The engine's hook for an agent configuration (its ``event-log.*`` keys) and a tracer provider; None
    when neither sink is on. Misconfiguration raises :class:`~agentplan.exceptions.AgentPlanError` here,
    at start-up."""
    from agentplan.eventlog import EventLogSettings, EventLogSink

    sinks: list[RunSink] = []
    if tracer_provider is not None:
        from agentplan.tracing import GenAITracingSink

        sinks.append(GenAITracingSink(tracer_provider, agent_name, carrier_of or (lambda meta: None), on_run_span))
    settings = EventLogSettings.from_config(config)
    if settings.enabled:
        sinks.append(EventLogSink(settings))
    return Observation(sinks, describe_key, describe_input) if sinks else None


def global_tracer_provider() -> Any:
    """The tracer provider the application installed with ``opentelemetry.trace.set_tracer_provider``, else
    None. Never imports OpenTelemetry: an application that set a provider has imported it already."""
    module = sys.modules.get("opentelemetry.trace")
    if module is None:
        return None
    provider = module.get_tracer_provider()
    if isinstance(provider, (module.ProxyTracerProvider, module.NoOpTracerProvider)):
        return None
    return provider
