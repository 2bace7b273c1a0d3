"""Implementations behind the operator commands of ``agentfleet`` (kept apart from typer wiring)."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

from confluent_kafka import Consumer, KafkaError, TopicPartition

from worker.exceptions import ConfigurationError
from worker.kafka.admin import TopicAdmin
from worker.kafka.properties import consumer_properties
from worker.state.store import OFFSET_KEY, PartitionStore


def plan_json(agent_path: str, resources: dict[str, str]) -> str:
    """The compiled plan of an agent as JSON, secrets redacted."""
    from agentplan import AgentConfiguration
    from worker.runtime import compile_plan, load_agent

    plan = compile_plan(load_agent(agent_path), AgentConfiguration.load(), resources)
    return plan.model_dump_json(indent=2, redact_secrets=True)


def consume_records(bootstrap: str, topic: str, from_beginning: bool, max_records: int | None,
                    idle_timeout_s: float, config: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Read committed records; stops after ``max_records`` or ``idle_timeout_s`` without records."""
    admin = TopicAdmin(bootstrap, config, timeout_s=10)
    admin.check_reachable()
    partitions = admin.partitions(topic)
    if partitions is None:
        raise ConfigurationError("topic", f"topic {topic!r} does not exist")
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"agentfleet-consume-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "isolation.level": "read_committed",
                         "fetch.wait.max.ms": 10, **consumer_properties(config)})
    start = 0 if from_beginning else -1  # OFFSET_END
    consumer.assign([TopicPartition(topic, p, start) for p in range(partitions)])
    seen = 0
    last = time.monotonic()
    try:
        while max_records is None or seen < max_records:
            if time.monotonic() - last > idle_timeout_s:
                return
            for msg in consumer.consume(num_messages=100, timeout=0.2):
                if msg.error() is not None:
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        raise ConfigurationError("topic", str(msg.error()))
                    continue
                last = time.monotonic()
                seen += 1
                value = msg.value()
                try:
                    decoded: Any = json.loads(value) if value else None
                except (ValueError, UnicodeDecodeError):
                    decoded = value.decode("utf-8", "replace") if value else None
                yield {"partition": msg.partition(), "offset": msg.offset(),
                       "key": msg.key().decode("utf-8", "replace") if msg.key() else None,
                       "headers": {k: (v.decode("utf-8", "replace") if v else None) for k, v in msg.headers() or []},
                       "value": decoded}
                if max_records is not None and seen >= max_records:
                    return
    finally:
        consumer.close()


def _stores(state_dir: Path, app_id: str) -> list[Path]:
    root = state_dir / app_id
    if not root.is_dir():
        raise ConfigurationError("state-dir", f"no state for app {app_id!r} under {state_dir}")
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def inspect_key(state_dir: Path, app_id: str, key: str) -> dict[str, Any] | None:
    """The locally stored state of ``key`` (the local stores mirror the committed changelog)."""
    for path in _stores(state_dir, app_id):
        store = PartitionStore(path)
        try:
            raw = store.get(key.encode())
            if raw is not None:
                return {"partition": int(path.name), "changelog_offset": store.changelog_offset(),
                        "state": json.loads(raw)}
        finally:
            store.close()
    return None


def list_keys(state_dir: Path, app_id: str) -> list[str]:
    keys: list[str] = []
    for path in _stores(state_dir, app_id):
        store = PartitionStore(path)
        try:
            keys.extend(k.decode("utf-8", "replace") for k in store.keys() if k != OFFSET_KEY)
        finally:
            store.close()
    return keys


def reset_app(bootstrap: str, app_id: str, state_dir: Path, config: dict[str, Any],
              echo: Callable[[str], None]) -> None:
    """Forget everything the app remembers: local stores, changelog, repartition topic, group offsets."""
    admin = TopicAdmin(bootstrap, config, timeout_s=10)
    admin.check_reachable()
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
