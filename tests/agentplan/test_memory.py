"""MemoryObject: dotted paths, the Flink Agents accessors, storability checks, persistence."""

from __future__ import annotations

import json
import math
from datetime import datetime

import pytest
from pydantic import BaseModel

from agentplan import ChatMessage, MemoryObject, MemoryValueError, MessageRole


class Profile(BaseModel):
    name: str
    tags: list[str] = []


class Wrapper(BaseModel):
    profile: Profile
    score: float


def roundtrip(memory: MemoryObject) -> MemoryObject:
    """What a checkpoint + restore does: encode, go through JSON text, decode."""
    return MemoryObject.from_data(json.loads(json.dumps(memory.to_data())))


def test_dotted_path_creates_intermediate_objects() -> None:
    memory = MemoryObject()
    memory.set("a.b.c", 1)
    assert memory.is_exist("a")
    assert memory.is_exist("a.b")
    assert memory.get("a.b.c") == 1
    node = memory.get("a.b")
    assert isinstance(node, MemoryObject)
    assert node.get("c") == 1
    assert memory.get_field_names() == ["a"]
    assert memory.get_fields() == {"a": {"b": {"c": 1}}}


def test_get_default_and_missing_paths() -> None:
    memory = MemoryObject()
    assert memory.get("nope") is None
    assert memory.get("nope.deeper", 7) == 7
    memory.set("x", 1)
    assert memory.get("x.y") is None  # a value, not an object: nothing below it
    assert not memory.is_exist("x.y")
    assert "x" in memory and "y" not in memory


def test_views_share_the_tree() -> None:
    memory = MemoryObject()
    child = memory.new_object("user")
    child.set("name", "ann")
    child.set("address.city", "Oslo")
    assert memory.get("user.name") == "ann"
    assert memory.get("user.address.city") == "Oslo"
    assert sorted(child.get_field_names()) == ["address", "name"]
    assert child.get_fields() == {"name": "ann", "address": {"city": "Oslo"}}


def test_new_object_existing_and_overwrite() -> None:
    memory = MemoryObject()
    first = memory.new_object("obj")
    first.set("k", 1)
    again = memory.new_object("obj")
    assert again.get("k") == 1  # returns the existing object
    fresh = memory.new_object("obj", overwrite=True)
    assert fresh.get_field_names() == []
    assert memory.get("obj.k") is None

    memory.set("scalar", 3)
    with pytest.raises(MemoryValueError, match="overwrite=True"):
        memory.new_object("scalar")
    replaced = memory.new_object("scalar", overwrite=True)
    assert isinstance(replaced, MemoryObject)
    assert isinstance(memory.get("scalar"), MemoryObject)


def test_value_and_object_cannot_be_confused() -> None:
    memory = MemoryObject()
    memory.set("a.b", 1)
    with pytest.raises(MemoryValueError, match="holds a value"):
        memory.set("a.b.c", 2)
    with pytest.raises(MemoryValueError, match="is an object"):
        memory.set("a", 5)
    assert memory.get("a.b") == 1


@pytest.mark.parametrize("path", ["", "a..b", ".a", "a."])
def test_invalid_paths(path: str) -> None:
    with pytest.raises(ValueError, match="invalid memory path"):
        MemoryObject().set(path, 1)


def test_delete() -> None:
    memory = MemoryObject()
    memory.set("a.b", 1)
    memory.set("a.c", 2)
    assert memory.delete("a.b") is True
    assert memory.delete("a.b") is False
    assert memory.delete("zz.top") is False
    assert memory.get_fields() == {"a": {"c": 2}}
    assert memory.delete("a") is True
    assert memory.get_field_names() == []


@pytest.mark.parametrize(
    "value",
    [object(), {1: "int key"}, {"ok": {"bad": {1, 2}}}, [1, datetime(2024, 1, 1)], math.nan, b"bytes",
     lambda: None],
    ids=["object", "int-key", "nested-set", "datetime-in-list", "nan", "bytes", "function"],
)
def test_non_storable_value_is_a_type_error_at_set(value: object) -> None:
    memory = MemoryObject()
    with pytest.raises(TypeError) as info:
        memory.set("bad", value)
    assert isinstance(info.value, MemoryValueError)
    assert "bad" in str(info.value)  # the message names the path
    assert not memory.is_exist("bad")  # nothing was written


def test_json_like_values_round_trip() -> None:
    memory = MemoryObject()
    value = {"s": "text", "i": 1, "f": 1.5, "b": True, "n": None, "l": [1, "two", [3]], "d": {"x": {"y": []}}}
    memory.set("data", value)
    memory.set("unicode", "今天")
    restored = roundtrip(memory)
    assert restored.get("data") == value
    assert restored.get("unicode") == "今天"


def test_pydantic_values_round_trip_as_the_same_type() -> None:
    memory = MemoryObject()
    wrapper = Wrapper(profile=Profile(name="bo", tags=["a"]), score=0.5)
    memory.set("w", wrapper)
    memory.set("history", [ChatMessage(role=MessageRole.ASSISTANT, content="hi")])
    memory.set("nested.by_name", {"bo": Profile(name="bo")})
    restored = roundtrip(memory)

    got = restored.get("w")
    assert type(got) is Wrapper
    assert type(got.profile) is Profile
    assert got == wrapper
    history = restored.get("history")
    assert type(history[0]) is ChatMessage and history[0].role is MessageRole.ASSISTANT
    assert type(restored.get("nested.by_name")["bo"]) is Profile


def test_set_copies_containers() -> None:
    memory = MemoryObject()
    items = ["a"]
    memory.set("items", items)
    items.append("b")
    assert memory.get("items") == ["a"]


def test_mutating_a_value_read_with_get_does_not_change_memory() -> None:
    # Change tracking (rollback of a failed action, snapshots of an in-flight action) only sees
    # set/delete; a container handed out by get() must not alias the stored one.
    memory = MemoryObject()
    memory.set("items", ["a"])
    memory.set("model", Profile(name="x", tags=[]))
    memory.get("items").append("b")
    memory.get("model").tags.append("t")
    memory.get_fields()["items"].append("c")
    assert memory.get("items") == ["a"]
    assert memory.get("model").tags == []


def test_before_write_hook_and_guard() -> None:
    writes: list[str] = []
    allowed = {"ok": True}

    def guard() -> None:
        if not allowed["ok"]:
            raise RuntimeError("blocked")

    memory = MemoryObject(guard=guard, before_write=lambda: writes.append("w"))
    memory.set("a", 1)
    memory.get("a")
    memory.new_object("o").set("x", 1)  # child views keep the hooks
    assert memory.delete("a")
    assert len(writes) == 3 + 1  # set, new_object, child set, delete
    allowed["ok"] = False
    with pytest.raises(RuntimeError, match="blocked"):
        memory.get("o")
    with pytest.raises(RuntimeError, match="blocked"):
        memory.get_fields()


def test_replace_data_resets_in_place() -> None:
    memory = MemoryObject()
    memory.set("a", 1)
    snapshot = memory.to_data()
    memory.set("a", 2)
    memory.set("b.c", 3)
    memory.replace_data(snapshot)
    assert memory.get_fields() == {"a": 1}
    memory.replace_data(None)
    assert memory.get_fields() == {}
