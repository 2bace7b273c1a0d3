"""``agentfleet approvals list|approve|reject``: the operator's side of parked runs.

``list`` reads the approvals topic read_committed and leaves out requests that have a decision on the
decisions topic or whose deadline passed; ``approve``/``reject`` write a decision on the request's key
and partition, where the worker owning the key's state reads it.
"""

from __future__ import annotations

import json
import time
from typing import Any

from confluent_kafka import Producer

from worker.approvals import decision_record
from worker.exceptions import ConfigurationError
from worker.kafka.properties import producer_properties
from worker.topic_reader import ReadPlan, read_topic

__all__ = ["decide", "pending_requests"]


def _records(bootstrap: str, topic: str, config: dict[str, Any]) -> list[tuple[bytes | None, dict[str, Any]]]:
    out = []
    for message in read_topic(bootstrap, ReadPlan(topic, offset="earliest"), config):
        try:
            value = json.loads(message.value() or b"")
        except ValueError:
            continue  # not ours to judge: the worker dead-letters bad decisions
        if isinstance(value, dict) and isinstance(value.get("request_id"), str):
            out.append((message.key(), value))
    return out


def pending_requests(bootstrap: str, app_id: str, config: dict[str, Any],
                     now: float | None = None) -> list[dict[str, Any]]:
    """Requests with no decision yet and a deadline still ahead, oldest first."""
    decided = {value["request_id"] for _key, value in _records(bootstrap, f"{app_id}-decisions", config)}
    now = time.time() if now is None else now
    pending = [value for _key, value in _records(bootstrap, f"{app_id}-approvals", config)
               if value["request_id"] not in decided and (value.get("deadline") is None or value["deadline"] > now)]
    return sorted(pending, key=lambda value: value.get("created") or 0)


def decide(bootstrap: str, app_id: str, request_id: str, approved: bool, config: dict[str, Any],
           decided_by: str = "", comment: str = "") -> dict[str, Any]:
    """Write the decision on a pending request; returns the request."""
    request = next((r for r in pending_requests(bootstrap, app_id, config) if r["request_id"] == request_id), None)
    if request is None:
        raise ConfigurationError("request-id", f"no pending request {request_id!r} on {app_id}-approvals "
                                               "(decided already, timed out, or never asked)")
    producer = Producer({**producer_properties(config), "bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "acks": "all"})
    errors: list[Any] = []
    producer.produce(f"{app_id}-decisions", decision_record(request_id, approved, decided_by, comment),
                     key=str(request["key"]).encode(), partition=int(request["partition"]),
                     on_delivery=lambda err, _msg: errors.append(err) if err is not None else None)
    if producer.flush(30) or errors:
        raise ConfigurationError("bootstrap-servers", f"the decision was not delivered: {errors or 'timed out'}")
    return request
