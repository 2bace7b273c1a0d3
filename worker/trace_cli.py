"""``agentfleet trace KEY``: one key's runs from the event log, as a tree (run -> actions -> model and tool calls).

The records come from ``<app-id>-events`` read_committed (exactly what the workers committed), or from
a local runner's JSON-lines file. Record kinds and fields: ``agentplan.eventlog``.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.text import Text
from rich.tree import Tree

from worker.exceptions import ConfigurationError

__all__ = ["RunView", "group_runs", "kafka_records", "file_records", "render_runs"]


@dataclass
class ActionView:
    record: dict[str, Any]
    calls: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RunView:
    run_id: str
    records: list[dict[str, Any]] = field(default_factory=list)

    def first(self, kind: str) -> dict[str, Any] | None:
        return next((r for r in self.records if r.get("record") == kind), None)

    @property
    def started_ts(self) -> float:
        return min(float(r.get("ts", 0)) for r in self.records)

    def actions(self) -> tuple[list[ActionView], list[dict[str, Any]]]:
        """Action attempts in start order, each with the calls it made; calls of actions not (yet) ended."""
        actions = sorted((ActionView(r) for r in self.records if r.get("record") == "action"),
                         key=lambda a: float(a.record.get("ts", 0)))
        orphans = []
        for call in (r for r in self.records if r.get("record") in ("llm_call", "tool_call", "durable_call")):
            owners = [a for a in actions if a.record.get("event_id") == call.get("event_id")
                      and a.record.get("action") == call.get("action")
                      and float(a.record.get("ts", 0)) <= float(call.get("ts", 0))]
            if owners:
                owners[-1].calls.append(call)
            else:
                orphans.append(call)
        return actions, orphans


def group_runs(records: Iterable[dict[str, Any]]) -> list[RunView]:
    """Records of one key, grouped by run, runs in start order."""
    runs: dict[str, RunView] = {}
    for record in records:
        run_id = str(record.get("run"))
        runs.setdefault(run_id, RunView(run_id)).records.append(record)
    return sorted(runs.values(), key=lambda r: r.started_ts)


def _duration(ms: Any) -> str:
    if not isinstance(ms, (int, float)):
        return "?"
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.1f} ms"


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts / 1000, tz=datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _call_label(call: dict[str, Any]) -> Text:
    kind = call.get("record")
    failed = call.get("error")
    text = Text()
    if kind == "llm_call":
        text.append(f"llm {call.get('model')}", style="bold magenta")
        text.append(f"  {_duration(call.get('duration_ms'))}")
        if not failed:
            text.append(f"  tokens {call.get('input_tokens', 0)} in / {call.get('output_tokens', 0)} out")
            if call.get("finish_reason"):
                text.append(f"  finish {call['finish_reason']}")
            if call.get("tool_calls"):
                text.append(f"  asks {', '.join(call['tool_calls'])}")
    elif kind == "tool_call":
        text.append(f"tool {call.get('tool')}", style="bold cyan")
        text.append(f"  {_duration(call.get('duration_ms'))}")
    else:
        text.append(f"durable {call.get('function')}", style="bold")
        text.append(f"  {_duration(call.get('duration_ms'))}")
    if failed:
        text.append(f"  error {failed}", style="red")
    return text


def _run_label(run: RunView) -> Text:
    start = run.first("run_started")
    end = run.first("run_finished")
    resumed = sum(1 for r in run.records if r.get("record") == "run_resumed")
    tokens_in = sum(int(r.get("input_tokens") or 0) for r in run.records if r.get("record") == "llm_call")
    tokens_out = sum(int(r.get("output_tokens") or 0) for r in run.records if r.get("record") == "llm_call")
    text = Text()
    text.append(f"run {run.run_id}", style="bold")
    if end is None:
        text.append("  unfinished", style="yellow")
    elif end.get("outcome") == "ok":
        text.append("  ok", style="green")
    else:
        text.append(f"  failed: {end.get('error')}", style="red")
    if end is not None:
        text.append(f"  {_duration(float(end.get('ts', 0)) - run.started_ts)}")
    text.append(f"  started {_when(run.started_ts)} UTC")
    if tokens_in or tokens_out:
        text.append(f"  tokens {tokens_in} in / {tokens_out} out")
    source = (start or {}).get("source") or {}
    if source.get("offset") is not None:
        text.append(f"  input {source.get('topic')}[{source.get('partition')}]@{source.get('offset')}", style="dim")
    if resumed:
        text.append(f"  resumed {resumed}x after a restart", style="yellow")
    trace_id = next((r.get("trace_id") for r in run.records if r.get("trace_id")), None)
    if trace_id:
        text.append(f"  trace {trace_id}", style="dim")
    return text


def render_runs(key: str, runs: list[RunView]) -> Tree:
    tree = Tree(Text(f"key {key!r}: {len(runs)} run{'s' if len(runs) != 1 else ''}", style="bold"))
    for run in runs:
        branch = tree.add(_run_label(run))
        actions, orphans = run.actions()
        for action in actions:
            r = action.record
            label = Text()
            label.append(str(r.get("action")), style="bold blue")
            label.append(f" on {r.get('event_type')} {r.get('event_id')}  {_duration(r.get('duration_ms'))}")
            if int(r.get("attempt") or 1) > 1:
                label.append(f"  attempt {r['attempt']}")
            if r.get("outcome") == "error":
                label.append(f"  error {r.get('error')}", style="red")
            node = branch.add(label)
            for call in action.calls:
                node.add(_call_label(call))
        for call in orphans:
            branch.add(_call_label(call))
    return tree


def kafka_records(bootstrap: str, topic: str, key: str, config: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The key's committed records of an event-log topic (read_committed), oldest first."""
    from worker.topic_reader import ReadPlan, read_topic

    for message in read_topic(bootstrap, ReadPlan(topic, "earliest", key=key), config):
        value = message.value()
        if value:
            yield json.loads(value)


def file_records(path: Path, key: str) -> Iterator[dict[str, Any]]:
    """The key's records of a local runner's JSON-lines event log."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigurationError("file", f"cannot read {path}: {exc.strerror or exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise ConfigurationError("file", f"{path}:{number} is not a JSON line") from None
        if isinstance(record, dict) and record.get("key") == key:
            yield record
