"""The hot path's shortcuts give what the slow paths gave: orjson state encoding, unvalidated instances."""

from __future__ import annotations

import json

import pytest

from agentplan import codec
from agentplan.events import InputEvent
from agentplan.fastmodel import trusted
from agentplan.memory import MemoryObject, MemoryRef, MemoryType


@pytest.mark.parametrize("data", [
    {"m": {"v": {"id": "r1", "text": "héllo \u2028 ☃"}}, "p": 12, "t": None},
    {"f": [0.1, 1e300, -0.0, 3], "b": True, "nested": {"l": [[], {}]}},
    {"big": 2**70},  # past 64 bits: the standard encoder's turn
    {1: "int key"},  # likewise: JSON makes it "1"
])
def test_state_json_is_what_the_standard_encoder_writes(data: object) -> None:
    assert codec.dump_json(data) == json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def test_unencodable_strings_still_fail() -> None:
    with pytest.raises(UnicodeEncodeError):
        codec.dump_json({"s": "\ud800"})


def test_trusted_instances_equal_validated_ones() -> None:
    event = trusted(InputEvent, {"id": "p1.0", "type": None, "attributes": {}, "input": {"x": 1}}, {"id", "input"})
    assert event == InputEvent(id="p1.0", input={"x": 1})
    assert event.model_dump(exclude_unset=True) == {"id": "p1.0", "input": {"x": 1}}
    assert InputEvent.from_record(event.to_record()) == event
    ref = MemoryObject(memory_type=MemoryType.SENSORY).set("a.b", 1)
    assert ref == MemoryRef(memory_type=MemoryType.SENSORY, path="a.b")
    assert hash(ref) == hash(MemoryRef(memory_type=MemoryType.SENSORY, path="a.b"))
