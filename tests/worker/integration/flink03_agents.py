"""Flink Agents 0.3.1-style agents for worker integration tests (agents run in worker subprocesses)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from agentplan import Agent, Event, InputEvent, OutputEvent, RunnerContext, action

#: How long the slow call waits for the test to kill its worker before giving up (bounded).
SLOW_CALL_LIMIT_S = 120.0


def _log(name: str, line: str) -> None:
    with open(Path(os.environ["FLINK03_CALL_DIR"]) / name, "a", encoding="utf-8") as file:
        file.write(line + "\n")
        file.flush()
        os.fsync(file.fileno())


class ReconciledChargeAgent(Agent):
    """Charges once per order through a durable call with a reconciler. The charge logs that it
    started, then hangs until its worker is killed (or ``FLINK03_CALL_DIR/release`` appears)."""

    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    async def charge_order(event: Event, ctx: RunnerContext) -> None:
        order = InputEvent.from_event(event).input
        order_id = order["id"]

        def charge() -> str:
            _log("charge.log", order_id)
            release = Path(os.environ["FLINK03_CALL_DIR"]) / "release"
            deadline = time.monotonic() + SLOW_CALL_LIMIT_S
            while not release.exists() and time.monotonic() < deadline:
                time.sleep(0.05)  # a slow payment provider; the test kills the worker meanwhile
            return f"charged {order_id}"

        def reconcile() -> str:
            _log("reconcile.log", order_id)
            return f"reconciled {order_id}"

        result = await ctx.durable_execute_async(charge, reconciler=reconcile)
        ctx.send_event(OutputEvent(output={"id": order_id, "result": result}))


class VisitCountingAgent(Agent):
    """Counts a key's visits in short-term memory (which a TTL may expire); output {"id", "visits"}."""

    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def count_visit(event: Event, ctx: RunnerContext) -> None:
        visitor = InputEvent.from_event(event).input["id"]
        visits = (ctx.short_term_memory.get("visits") or 0) + 1
        ctx.short_term_memory.set("visits", visits)
        ctx.action_metric_group.get_counter("visits").inc()
        ctx.send_event(OutputEvent(output={"id": visitor, "visits": visits}))
