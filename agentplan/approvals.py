"""Durable human approval (or any external decision): a run parks until a decision or its timeout.

An action sends an :class:`ApprovalRequestEvent`. When the run reaches it, the engine parks the run:
the request is handed to the driver (the Kafka worker writes it to ``<app-id>-approvals`` in the same
transaction as the key's state, which records the parked request), and the run waits without holding
a concurrency slot. A decision for the request (``Engine.deliver``; on Kafka a record on
``<app-id>-decisions``) resumes it as an :class:`ApprovalDecisionEvent`; past ``timeout_s`` it resumes
as an :class:`ApprovalTimeoutEvent` instead. The key's later inputs wait behind the parked run.

The parked request lives in the key's state, so a restarted or rebalanced worker resumes the wait;
request ids are deterministic, so a replay re-sends the same request, and a decision whose request
is no longer parked (already decided, timed out) is ignored: each request resolves exactly once.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from pydantic import Field

from agentplan.events import Event


class ApprovalRequestEvent(Event):
    """Ask for an external decision; the run parks until it comes, or for ``timeout_s`` at most."""

    request: Any = None  # what the approver is shown (JSON data)
    timeout_s: float | None = Field(None, gt=0)
    kind: str = "approval"  # copied to the decision: "tool" is the built-in tool approval's


#: ``kind`` of the requests the built-in tool action sends for tools that require approval.
TOOL_APPROVAL = "tool"
_APPROVAL_MARK = "__agentplan_requires_approval__"


def requires_approval(obj: Any) -> Any:
    """Mark a tool function: a model's call of it waits for an approval (``@tool`` then ``@requires_approval``)."""
    setattr(obj.__func__ if isinstance(obj, staticmethod) else obj, _APPROVAL_MARK, True)
    return obj


def marked_for_approval(func: Any) -> bool:
    return bool(getattr(func, _APPROVAL_MARK, False))


class ApprovalDecisionEvent(Event):
    """The decision on request ``request_id``."""

    request_id: str
    approved: bool
    decided_by: str = ""
    comment: str = ""
    data: Any = None  # anything else the decision carries (an external event's payload)
    kind: str = "approval"  # set by the engine from the request
    request: Any = None  # the request's payload, set by the engine


class ApprovalTimeoutEvent(Event):
    """No decision on request ``request_id`` came within its ``timeout_s``."""

    request_id: str
    request: Any = None
    kind: str = "approval"


def request_id(engine_key: Any, run_id: str, event_id: str) -> str:
    """Deterministic per key, run and event, so a replayed run asks under the same id."""
    return hashlib.blake2b(f"{engine_key!r}/{run_id}/{event_id}".encode(), digest_size=10).hexdigest()


def park(engine_key: Any, run_id: str, event: ApprovalRequestEvent, now: float | None = None) -> dict[str, Any]:
    """The parked marker kept in the run's state: request id, creation and deadline (epoch seconds)."""
    created = time.time() if now is None else now
    return {"id": request_id(engine_key, run_id, event.id), "created": created,
            "deadline": None if event.timeout_s is None else created + event.timeout_s}


def request_record(parked: dict[str, Any], event: ApprovalRequestEvent, user_key: str) -> dict[str, Any]:
    """What the driver publishes for an approver."""
    return {"request_id": parked["id"], "key": user_key, "request": event.request, "created": parked["created"],
            "deadline": parked["deadline"]}


def resolution(parked: dict[str, Any], decision: Event | None, request: ApprovalRequestEvent) -> Event:
    """The event a parked run resumes with: the decision, or a timeout."""
    if decision is not None:
        return decision.model_copy(update={"kind": request.kind, "request": request.request})
    return ApprovalTimeoutEvent(request_id=parked["id"], request=request.request, kind=request.kind)
