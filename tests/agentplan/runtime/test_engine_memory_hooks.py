"""The memory hooks the engine installs (slot methods since they stopped being per-key closures) still guard
durable calls and snapshot the state from before an action's first write, for rollback and checkpoints."""

from __future__ import annotations

import pytest

from agentplan import Agent, AgentPlan, Engine
from agentplan.exceptions import DurableCallError
from agentplan.memory import MemoryObject, MemoryType
from agentplan.runtime.engine import _Slot
from tests.agentplan.support import make_config


def test_tracked_memory_snapshots_before_the_first_write_of_an_action_only() -> None:
    engine = Engine(AgentPlan.from_agent(Agent(), make_config()))
    slot = _Slot("k")
    slot.memory = engine._tracked(slot, None, "memory_backup")
    assert slot.memory._memory_type is MemoryType.SHORT_TERM
    slot.memory.set("a", 1)
    assert slot.memory_backup is None  # outside an action: nothing to roll back to
    slot.in_action = True
    slot.memory.set("a", 2)
    slot.memory.new_object("child").set("b", 3)  # a child view writes through the same hooks
    before = MemoryObject.from_data(slot.memory_backup)
    assert before.get("a") == 1
    assert not before.is_exist("child")
    assert slot.memory.get("a") == 2
    assert slot.memory.get("child.b") == 3


def test_tracked_memory_is_refused_inside_a_durable_call() -> None:
    engine = Engine(AgentPlan.from_agent(Agent(), make_config()))
    slot = _Slot("k")
    slot.memory = engine._tracked(slot, None, "memory_backup")

    class InDurableCall:
        _durable_depth = 1

    slot.ctx = InDurableCall()  # type: ignore[assignment]
    with pytest.raises(DurableCallError):
        slot.memory.get("a")
