"""Implementations behind the operator commands of ``agentfleet`` (kept apart from typer wiring)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from worker.exceptions import ConfigurationError
from worker.kafka.admin import TopicAdmin
from worker.state.store import OFFSET_KEY, PartitionStore


def plan_json(agent_path: str, resources: dict[str, str]) -> str:
    """The compiled plan of an agent as JSON, secrets redacted."""
    from agentplan import AgentConfiguration
    from worker.plugins import compile_plan, load_agent

    plan = compile_plan(load_agent(agent_path), AgentConfiguration.load(), resources)
    return plan.model_dump_json(indent=2, redact_secrets=True)


def _stores(state_dir: Path, app_id: str) -> list[Path]:
    root = state_dir / app_id
    if not root.is_dir():
        raise ConfigurationError("state-dir", f"no state for app {app_id!r} under {state_dir}")
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def inspect_key(state_dir: Path, app_id: str, key: str, raw: bool = False) -> dict[str, Any] | None:
    """The locally stored state of ``key`` (the local stores mirror the committed changelog).

    Shown under the documented names of :func:`describe_state` unless ``raw`` asks for the
    stored encoding itself (``"state"``).
    """
    for path in _stores(state_dir, app_id):
        store = PartitionStore(path, read_only=True)
        try:
            stored = store.get(key.encode())
            if stored is not None:
                where = {"key": key, "partition": int(path.name), "changelog_offset": store.changelog_offset()}
                data = json.loads(stored)
                return {**where, "state": data} if raw else {**where, **describe_state(data)}
        finally:
            store.close()
    return None


def describe_state(data: dict[str, Any]) -> dict[str, Any]:
    """A key's stored state (the engine's compact encoding) under the names README documents.

    - ``memory``: short-term memory as nested objects (a pydantic model value shows as
      ``{"__model__": "module:Class", "value": {...}}``);
    - ``finished_through_offset``: the progress marker, the offset of the last input whose run
      finished; inputs at or below it are skipped when replayed (null before the first one);
    - ``unfinished_run``: null, or the run in flight when the state was committed, which a worker
      resumes: ``input_offset``, ``input``, ``pending_events`` (type and fields, in order),
      ``actions_done`` (actions of the first pending event already completed), ``sensory_memory``,
      ``journal`` (recorded durable-call results by ``<event id>:<action>:<call index>``) and
      ``next_event_seq``.

    Nothing is imported or decoded: values stay the JSON they are stored as.
    """
    shown: dict[str, Any] = {"memory": _memory(data.get("m")), "finished_through_offset": data.get("p"),
                             "unfinished_run": None}
    run = data.get("r")
    if run is not None:
        shown["unfinished_run"] = {
            "run_id": run.get("id"), "input_offset": run.get("pos"), "input": run.get("in"),
            "pending_events": run.get("pending", []), "actions_done": run.get("cur"),
            "sensory_memory": _memory(run.get("s")), "journal": run.get("j") or {},
            "next_event_seq": run.get("n"),
        }
        if run.get("pk") is not None:  # parked: waiting for a decision (agentplan.approvals)
            shown["unfinished_run"]["parked"] = {"request_id": run["pk"].get("id"), "created": run["pk"].get("created"),
                                                 "deadline": run["pk"].get("deadline")}
    if data.get("u") is not None:
        shown["budget_usage"] = describe_usage(data["u"])
    unknown = {k: v for k, v in data.items() if k not in ("m", "p", "r", "u")}
    if unknown:  # written by a newer version: shown rather than hidden
        shown["other"] = unknown
    return shown


def describe_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """A key's LLM usage against its budgets: lifetime totals, and the rolling window's buckets.

    - ``lifetime_tokens``, ``lifetime_usd``, ``lifetime_calls``: every model call whose result was committed;
    - ``window``: ``{"from": ISO time (UTC), "tokens", "usd"}`` per bucket of the rolling window, oldest first
      (buckets older than the window are dropped at the key's next call, so some may be past it).
    """
    window = [{"from": datetime.fromtimestamp(start, timezone.utc).isoformat(timespec="seconds"),
               "tokens": tokens, "usd": usd} for start, tokens, usd in usage.get("w") or []]
    return {"lifetime_tokens": usage.get("t", 0), "lifetime_usd": usage.get("c", 0.0),
            "lifetime_calls": usage.get("n", 0), "window": window}


def _memory(node: Any) -> dict[str, Any]:
    """A memory tree (``{"v": values, "o": nested trees}``) as one nested object."""
    if not isinstance(node, dict):
        return {}
    plain: dict[str, Any] = dict(node.get("v") or {})
    plain.update({name: _memory(child) for name, child in (node.get("o") or {}).items()})
    return plain


def list_keys(state_dir: Path, app_id: str) -> list[str]:
    keys: list[str] = []
    for path in _stores(state_dir, app_id):
        store = PartitionStore(path, read_only=True)
        try:
            keys.extend(k.decode("utf-8", "replace") for k in store.keys() if k != OFFSET_KEY)
        finally:
            store.close()
    return keys


def reset_app(bootstrap: str, app_id: str, state_dir: Path, config: dict[str, Any],
              echo: Callable[[str], None], force: bool = False) -> None:
    """Forget everything the app remembers: local stores, changelog, repartition topic, group offsets.

    Refuses while the group has members: deleting a live worker's changelog crashes it and
    loses its uncommitted runs (``force`` is for a group whose members are known to be gone).
    """
    admin = TopicAdmin(bootstrap, config, timeout_s=10)
    admin.check_reachable()
    if not force:
        from worker.cluster_info import describe_group

        members = describe_group(admin, app_id)["members"]
        if members:
            clients = ", ".join(sorted({m["client"] for m in members}))
            raise ConfigurationError("app-id", f"group {app_id!r} has {len(members)} live member(s) ({clients}): "
                                               "stop its workers first (or pass --force)")
    deleted = admin.delete_topics([f"{app_id}-state-changelog", f"{app_id}-repartition"])
    echo(f"deleted topics: {deleted or 'none'}")
    try:
        futures = admin.client.delete_consumer_groups([app_id], request_timeout=10)
        for future in futures.values():
            future.result(timeout=15)
        echo(f"deleted consumer group {app_id!r}")
    except Exception as exc:  # noqa: BLE001 - a group that never committed does not exist
        echo(f"consumer group {app_id!r} not deleted: {exc}")
    local = state_dir / app_id
    if local.exists():
        shutil.rmtree(local)
        echo(f"removed {local}")
