"""Parked runs, the engine's side of :mod:`agentplan.approvals`: parking a run on its request, and
resuming it with a decision or a timeout.

A parked run gives its run slot back while it waits and counts as parked for ``Engine.wait_quiet``
(a drain at shutdown leaves it to the next owner). The resolution replaces the request at the head
of the run's pending events, so the state collected next holds it together with the decision's
record, which finishes with that state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from agentplan import approvals
from agentplan.approvals import ApprovalDecisionEvent, ApprovalRequestEvent

if TYPE_CHECKING:
    from agentplan.runtime.engine import Engine, _Run, _Slot

logger = logging.getLogger(__name__)


def deliver(engine: Engine, key: Hashable, decision: ApprovalDecisionEvent, meta: Any) -> None:
    """Hand a decision to ``key``'s parked run. One whose request is not parked (decided or timed out
    already, or unknown) is finished at once as skipped."""
    slot = engine._slot_of(key)
    run = slot.run
    if run is None or run.parked is None or run.parked["id"] != decision.request_id or slot.decision is not None:
        logger.info("key %s: decision on request %s ignored: no run waits for it", engine._describe_key(key),
                    decision.request_id)
        slot.add_skipped(meta)
        slot.add_finished(meta)
        slot.version += 1
        return
    slot.decision = (decision, meta)  # taken by the run when it parks (a restored run first needs its input)
    if slot.wakeup is not None:
        slot.wakeup.set()


async def park(engine: Engine, slot: _Slot, run: _Run, event: ApprovalRequestEvent) -> None:
    """Wait for the decision on ``event`` (or its timeout) without holding a run slot, then put the
    resolution in its place."""
    if run.parked is None:  # else restored: its request was published with the state that parked it
        run.parked = approvals.park(slot.key, run.run_id, event)
        slot.add_request(run.meta, approvals.request_record(run.parked, event, engine._user_key(slot.key)))
        slot.version += 1
    parked = run.parked
    run_slots = engine._run_slots
    assert run_slots is not None
    while slot.decision is None:
        deadline = parked["deadline"]
        remaining = None if deadline is None else deadline - time.time()
        if remaining is not None and remaining <= 0:
            break
        slot.wakeup = asyncio.Event()
        run_slots.release()
        try:
            with engine._parked():
                await asyncio.wait_for(slot.wakeup.wait(), remaining)
        except asyncio.TimeoutError:
            pass
        finally:
            slot.wakeup = None
            await run_slots.acquire()
    decision: ApprovalDecisionEvent | None = None
    if slot.decision is not None:
        decision, meta = slot.decision
        slot.add_finished(meta)
        slot.decision = None
    resumed = approvals.resolution(parked, decision, event)
    object.__setattr__(resumed, "id", f"{run.run_id}.{run.next_event_seq}")  # deterministic, as send_event's
    run.next_event_seq += 1
    run.pending[0] = resumed
    run.cursor = 0
    run.parked = None
    slot.version += 1
