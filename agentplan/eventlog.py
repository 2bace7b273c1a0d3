"""The event log: every event, action, model and tool call of every run, with timings and the key.

Configured with the Flink Agents keys (agent configuration, YAML or ``config.set``):

* ``event-log.level``: ``OFF`` (default here), ``STANDARD`` (payloads truncated) or ``VERBOSE`` (whole);
* ``event-log.type.<EVENT_TYPE>.level``: the level of one event type's records (its class name, its
  ``EVENT_TYPE`` or ``module:Class``), over the global level;
* ``event-log.standard.max-string-length`` (2000), ``...max-array-elements`` (20), ``...max-depth`` (5):
  what STANDARD keeps of a payload;
* locally, ``event-log.file`` (JSON lines), else ``<baseLogDir>/events.jsonl``, else ``./events.jsonl``.

Records are plain JSON objects; ``record`` says which kind (``run_started``, ``run_resumed``, ``event``,
``action``, ``llm_call``, ``tool_call``, ``durable_call``, ``run_finished``), and every record has ``ts``
(epoch milliseconds), ``key`` and ``run``. The engine queues them with the key's state
(``agentplan.runtime.observe``); the local runner appends them to a file, the Kafka worker commits them
to ``<app-id>-events`` in the transaction of the state they belong to.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agentplan.chat_models import ChatResult
from agentplan.config import AgentConfiguration
from agentplan.events import Event
from agentplan.exceptions import AgentPlanError
from agentplan.runtime.observe import ObservedAction, ObservedCall, ObservedRun, RunSink

__all__ = ["EventLogLevel", "EventLogSettings", "EventLogSink", "append_jsonl", "event_type_names", "loggable",
           "write_event_log"]


class EventLogLevel(str, enum.Enum):
    OFF = "OFF"
    STANDARD = "STANDARD"
    VERBOSE = "VERBOSE"


_PREFIX = "event_log."
_TYPE_PREFIX = "event_log.type."


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"event-log": {"level": x}}`` and ``{"event-log.level": x}`` alike, keys with ``_`` for ``-``
    (as AgentConfiguration stores them)."""
    flat: dict[str, Any] = {}
    for name, value in data.items():
        key = prefix + str(name).replace("-", "_")
        if isinstance(value, dict):
            flat.update(_flatten(value, key + "."))
        else:
            flat[key] = value
    return flat


def _level(setting: str, value: Any) -> EventLogLevel:
    try:
        return EventLogLevel(str(value).strip().upper())
    except ValueError:
        raise AgentPlanError(f"{setting}: expected OFF, STANDARD or VERBOSE, got {value!r}") from None


def _positive(setting: str, value: Any) -> int:
    if isinstance(value, bool) or not str(value).strip().isdigit() or int(value) < 1:
        raise AgentPlanError(f"{setting}: expected a whole number >= 1, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class EventLogSettings:
    level: EventLogLevel = EventLogLevel.OFF
    type_levels: dict[str, EventLogLevel] = field(default_factory=dict)
    max_string_length: int = 2000
    max_array_elements: int = 20
    max_depth: int = 5
    file: Path | None = None  # local runner only

    @property
    def enabled(self) -> bool:
        return self.level is not EventLogLevel.OFF or any(v is not EventLogLevel.OFF for v in self.type_levels.values())

    @classmethod
    def from_config(cls, config: AgentConfiguration) -> EventLogSettings:
        """Read the ``event-log.*`` keys; a bad value raises :class:`AgentPlanError` naming its key."""
        flat = _flatten(config.extra)
        unknown = [k for k in flat if k.startswith(_PREFIX) and not k.startswith(_TYPE_PREFIX) and k not in (
            "event_log.level", "event_log.file", "event_log.standard.max_string_length",
            "event_log.standard.max_array_elements", "event_log.standard.max_depth")]
        if unknown:
            raise AgentPlanError(f"{unknown[0].replace('_', '-')}: unknown event-log setting")
        levels = {}
        for key, value in flat.items():
            if key.startswith(_TYPE_PREFIX):
                if not key.endswith(".level") or len(key) <= len(_TYPE_PREFIX) + len(".level"):
                    raise AgentPlanError(f"event-log.{key[len(_PREFIX):]}: expected event-log.type.<EVENT_TYPE>.level")
                name = key[len(_TYPE_PREFIX):-len(".level")]
                levels[name] = _level(f"event-log.type.{name}.level", value)
        file = flat.get("event_log.file")
        base_dir = flat.get("baseLogDir")
        return cls(
            level=_level("event-log.level", flat.get("event_log.level", "OFF")),
            type_levels=levels,
            max_string_length=_positive("event-log.standard.max-string-length",
                                        flat.get("event_log.standard.max_string_length", 2000)),
            max_array_elements=_positive("event-log.standard.max-array-elements",
                                         flat.get("event_log.standard.max_array_elements", 20)),
            max_depth=_positive("event-log.standard.max-depth", flat.get("event_log.standard.max_depth", 5)),
            file=Path(file) if file else Path(base_dir) / "events.jsonl" if base_dir else None,
        )

    def level_of(self, event_type: type, type_name: str | None = None) -> EventLogLevel:
        """The level of an event class, or of a unified event's own ``type_name`` (which comes first)."""
        for name in ((type_name,) if type_name else ()) + event_type_names(event_type):
            found = self.type_levels.get(name.replace("-", "_"))
            if found is not None:
                return found
        return self.level


def event_type_names(event_type: type) -> tuple[str, ...]:
    """The names an event type's records and settings go by: a declared ``EVENT_TYPE`` (Flink Agents 0.3
    events) or the class name first, then ``module:Class`` and ``module.Class``. The built-in events keep
    their class names first, and answer to upstream's type strings (``_input_event``) in settings too."""
    names = []
    declared = getattr(event_type, "EVENT_TYPE", None)
    own_path = f"{event_type.__module__}:{event_type.__qualname__}"
    declared = declared if isinstance(declared, str) and declared and declared != own_path else None
    if declared is not None and not event_type.__module__.startswith("agentplan."):
        names.append(declared)
    names += [event_type.__name__, own_path, f"{event_type.__module__}.{event_type.__qualname__}"]
    if declared is not None and declared not in names:
        names.append(declared)
    return tuple(names)


def loggable(value: Any, limits: EventLogSettings | None, depth: int = 1) -> Any:
    """``value`` as JSON data; with ``limits`` (STANDARD) strings, arrays and nesting cut to them, each cut
    marked (``"...(N more chars)"``, a last element ``"...(N more)"``, ``"<depth limit>"``)."""
    if isinstance(value, BaseModel):
        try:
            value = value.model_dump(mode="json")
        except Exception:  # noqa: BLE001 - arbitrary field types: show the text instead
            value = str(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        if limits is not None and len(value) > limits.max_string_length:
            return f"{value[:limits.max_string_length]}...({len(value) - limits.max_string_length} more chars)"
        return value
    if isinstance(value, enum.Enum):
        return loggable(value.value, limits, depth)
    if isinstance(value, type):
        return f"{value.__module__}:{value.__qualname__}"
    if isinstance(value, (list, tuple, dict)):
        if limits is not None and depth > limits.max_depth:
            return "<depth limit>"
        if isinstance(value, dict):
            return {str(k): loggable(v, limits, depth + 1) for k, v in value.items()}
        items = list(value)
        if limits is not None and len(items) > limits.max_array_elements:
            kept = [loggable(v, limits, depth + 1) for v in items[:limits.max_array_elements]]
            return [*kept, f"...({len(items) - limits.max_array_elements} more)"]
        return [loggable(v, limits, depth + 1) for v in items]
    return loggable(str(value), limits, depth)


def _error_text(error: BaseException | None) -> str | None:
    if error is None:
        return None
    cause = getattr(error, "cause", None)  # ActionError wraps the user's exception
    shown = cause if isinstance(cause, BaseException) else error
    return f"{type(shown).__name__}: {shown}"[:1000]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


class EventLogSink(RunSink):
    """Turns what runs do into log records (see the module docstring)."""

    def __init__(self, settings: EventLogSettings) -> None:
        self.settings = settings
        self.runs_logged = settings.level is not EventLogLevel.OFF
        self._levels: dict[type | tuple[type, str], EventLogLevel] = {}

    def _record(self, run: ObservedRun, kind: str, ts: float, **fields: Any) -> dict[str, Any]:
        return {"record": kind, "ts": round(ts * 1000, 3), "key": run.key_text, "run": run.run_id, **fields}

    def _event(self, run: ObservedRun, event: Event, action: str | None, ts: float) -> None:
        cls = type(event)
        type_name = event.type  # a unified Event(type=...) is logged and configured under its own type
        key = cls if type_name is None else (cls, type_name)
        level = self._levels.get(key)
        if level is None:
            level = self._levels[key] = self.settings.level_of(cls, type_name)
        if level is EventLogLevel.OFF:
            return
        limits = self.settings if level is EventLogLevel.STANDARD else None
        payload = {name: loggable(getattr(event, name), limits) for name in cls._typed_fields}
        if event.attributes:  # a unified event's (Flink Agents 0.3) payload
            payload["attributes"] = loggable(event.attributes, limits)
        run.emit(self._record(run, "event", ts, event_id=event.id, event_type=type_name or event_type_names(cls)[0],
                              action=action, event=payload))

    # -- RunSink ------------------------------------------------------------------------------------
    def run_started(self, run: ObservedRun, input_event: Event | None) -> None:
        if self.runs_logged:
            extra = {"trace_id": run.trace_id} if run.trace_id else {}
            run.emit(self._record(run, "run_resumed" if run.resumed else "run_started", run.started_wall,
                                  source=run.source(), **extra))
        if input_event is not None:
            self._event(run, input_event, None, run.started_wall)

    def run_finished(self, run: ObservedRun, error: BaseException | None) -> None:
        if self.runs_logged:
            run.emit(self._record(run, "run_finished", time.time(), outcome="failed" if error else "ok",
                                  duration_ms=_ms(time.monotonic() - run.started), error=_error_text(error)))

    def action_finished(self, action: ObservedAction, emitted: Sequence[Event], error: BaseException | None) -> None:
        run = action.run
        now = time.time()
        if self.runs_logged:
            run.emit(self._record(run, "action", action.started_wall, action=action.name, event_id=action.event.id,
                                  event_type=action.event.type or event_type_names(type(action.event))[0],
                                  attempt=action.attempt,
                                  duration_ms=_ms(time.monotonic() - action.started),
                                  outcome="error" if error else "ok", error=_error_text(error),
                                  emitted=[e.id for e in emitted]))
        for event in emitted:
            self._event(run, event, action.name, now)

    def call_finished(self, call: ObservedCall, result: Any, error: BaseException | None) -> None:
        if not self.runs_logged:
            return
        action = call.action
        fields: dict[str, Any] = {"action": action.name, "event_id": action.event.id,
                                  "duration_ms": _ms(time.monotonic() - call.started), "error": _error_text(error)}
        if call.kind == "chat":
            kind = "llm_call"
            fields["model"] = call.name
            if isinstance(result, ChatResult):
                fields.update(response_model=result.model, input_tokens=result.prompt_tokens,
                              output_tokens=result.completion_tokens, finish_reason=result.finish_reason or None,
                              tool_calls=[c.name for c in result.message.tool_calls])
        elif call.kind == "execute_tool":
            kind = "tool_call"
            fields.update(tool=call.name, call_id=call.attributes.get("call_id"))
        else:
            kind = "durable_call"
            fields["function"] = call.name
        action.run.emit(self._record(action.run, kind, call.started_wall, **fields))


def append_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Append records to a JSON-lines file (its folder created); returns how many were written."""
    lines = [json.dumps(record, ensure_ascii=False, default=str) for record in records]
    if not lines:
        return 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
    except OSError as exc:
        raise AgentPlanError(f"event-log.file: cannot write {path}: {exc.strerror or exc}") from None
    return len(lines)


def write_event_log(config: AgentConfiguration, deltas: Iterable[Any]) -> int:
    """The local runner's sink: the records of collected deltas, appended to the configured file."""
    settings = EventLogSettings.from_config(config)
    if not settings.enabled:
        return 0
    return append_jsonl(settings.file or Path("events.jsonl"), (r for delta in deltas for r in delta.log))
