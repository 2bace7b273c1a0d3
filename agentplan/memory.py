"""Per-key memory: a tree of objects addressed by dotted paths.

Values must survive persistence (JSON-like data or pydantic models); anything else is
rejected at ``set`` with a :class:`TypeError` so the mistake surfaces where it is made,
not at the next checkpoint.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from agentplan import codec
from agentplan.exceptions import MemoryValueError, SerializationError
from agentplan.fastmodel import trusted

if TYPE_CHECKING:
    from agentplan.runner_context import RunnerContext


class MemoryType(enum.Enum):
    """Which memory a :class:`MemoryRef` points into. (Flink Agents 0.3 gives SENSORY the tuple value
    ``("sensory",)`` by a stray comma; here it is the string it was meant to be.)"""

    SENSORY = "sensory"
    SHORT_TERM = "short_term"


class MemoryRef(BaseModel):
    """A reference to a memory value, as returned by :meth:`MemoryObject.set`; small enough to pass in
    events instead of the value. ``ref.resolve(ctx)`` reads the value back."""

    model_config = ConfigDict(frozen=True)

    memory_type: MemoryType = MemoryType.SHORT_TERM
    path: str

    @classmethod
    def create(cls, memory_type: MemoryType, path: str) -> MemoryRef:
        return cls(memory_type=memory_type, path=path)

    def resolve(self, ctx: RunnerContext) -> Any:
        memory = ctx.sensory_memory if self.memory_type is MemoryType.SENSORY else ctx.short_term_memory
        return memory.get(self)


class _Node(dict):
    """An object node; plain dict values stored by users stay plain dicts."""


Guard = Callable[[], None]


def _no_guard() -> None:
    return None


class MemoryObject:
    """A view on one node of a memory tree."""

    __slots__ = ("_node", "_guard", "_before_write", "_memory_type", "_prefix")

    def __init__(self, node: _Node | None = None, guard: Guard = _no_guard,
                 before_write: Callable[[], None] | None = None,
                 memory_type: MemoryType = MemoryType.SHORT_TERM, prefix: str = "") -> None:
        # guard: called before every access (the engine forbids memory inside durable calls);
        # before_write: called before every mutation (the engine snapshots for rollback).
        # memory_type and prefix (this node's path) make the MemoryRefs that set() returns.
        self._node = node if node is not None else _Node()
        self._guard = guard
        self._before_write = before_write
        self._memory_type = memory_type
        self._prefix = prefix

    # -- navigation -------------------------------------------------------------------
    def _walk(self, parts: list[str], create: bool) -> _Node | None:
        node = self._node
        for part in parts:
            child = node.get(part)
            if child is None and create:
                child = node[part] = _Node()
            if not isinstance(child, _Node):
                if create:
                    raise MemoryValueError(f"memory path segment {part!r} holds a value, not an object")
                return None
            node = child
        return node

    @staticmethod
    def _split(path: str) -> list[str]:
        parts = path.split(".")
        if "" in parts:  # an empty path, or an empty segment
            raise ValueError(f"invalid memory path {path!r}")
        return parts

    def detach_hooks(self) -> None:
        """Drop the guard and write hooks: the engine calls it on a key's memory when the key leaves it, so the
        hooks' references back to the key's slot (a reference cycle) no longer keep both for the cyclic GC."""
        self._guard = _no_guard
        self._before_write = None

    def _writing(self) -> None:
        if self._before_write is not None:
            self._before_write()

    def _child(self, node: _Node, path: str) -> MemoryObject:
        return MemoryObject(node, self._guard, self._before_write, self._memory_type, self._prefix + path + ".")

    # -- public API (Flink Agents compatible) -------------------------------------------
    def get(self, path: str | MemoryRef, default: Any = None) -> Any:
        """The value at ``path`` (or a :class:`MemoryRef`'s path), a :class:`MemoryObject` for an object
        node, or ``default``."""
        self._guard()
        if type(path) is not str and isinstance(path, MemoryRef):
            path = path.path
        *parents, leaf = self._split(path)
        node = self._walk(parents, create=False)
        if node is None or leaf not in node:
            return default
        value = node[leaf]
        if isinstance(value, _Node):
            return self._child(value, path)
        return _detached(value)

    def set(self, path: str, value: Any) -> MemoryRef:
        """Store ``value`` at ``path``, creating intermediate objects; returns a reference to it.

        Values must survive persistence: JSON-like values (None, bool, int, float, str, lists, dicts
        with str keys), and, beyond what Flink Agents 0.3 accepts, pydantic models, enums and tuples
        (which round-trip here). Anything else raises :class:`MemoryValueError` (a TypeError) naming
        the path."""
        self._guard()
        try:
            codec.check_storable(value, f"memory value at {path!r}")
        except SerializationError as exc:
            raise MemoryValueError(str(exc)) from None
        *parents, leaf = self._split(path)
        self._writing()
        node = self._walk(parents, create=True)
        assert node is not None
        if isinstance(node.get(leaf), _Node):
            raise MemoryValueError(f"memory path {path!r} is an object; cannot overwrite it with a value")
        node[leaf] = _detached(value)
        # Not validated: the fields are known valid, and set() is on actions' hot path.
        return trusted(MemoryRef, {"memory_type": self._memory_type, "path": self._prefix + path},
                       {"memory_type", "path"})

    def new_object(self, path: str, overwrite: bool = False) -> MemoryObject:
        """Create (or with ``overwrite`` replace) an object node at ``path``."""
        self._guard()
        *parents, leaf = self._split(path)
        existing_node = self._walk(parents, create=False)
        existing = existing_node.get(leaf) if existing_node is not None else None
        if isinstance(existing, _Node) and not overwrite:
            return self._child(existing, path)
        self._writing()
        node = self._walk(parents, create=True)
        assert node is not None
        existing = node.get(leaf)
        if existing is not None and not overwrite:
            if isinstance(existing, _Node):
                return self._child(existing, path)
            raise MemoryValueError(f"memory path {path!r} holds a value; pass overwrite=True to replace it")
        child = node[leaf] = _Node()
        return self._child(child, path)

    def is_exist(self, path: str) -> bool:
        self._guard()
        *parents, leaf = self._split(path)
        node = self._walk(parents, create=False)
        return node is not None and leaf in node

    def get_field_names(self) -> list[str]:
        self._guard()
        return list(self._node.keys())

    def get_fields(self) -> dict[str, Any]:
        """All fields at this level; nested objects as plain dicts."""
        self._guard()
        return {k: _to_plain(v) for k, v in self._node.items()}

    def delete(self, path: str) -> bool:
        self._guard()
        *parents, leaf = self._split(path)
        node = self._walk(parents, create=False)
        if node is None or leaf not in node:
            return False
        self._writing()
        del node[leaf]
        return True

    def clear(self) -> None:
        self._writing()
        self._node.clear()

    def __contains__(self, path: str) -> bool:
        return self.is_exist(path)

    def __repr__(self) -> str:
        return f"MemoryObject({self.get_fields()!r})"

    # -- persistence ---------------------------------------------------------------------
    def to_data(self) -> Any:
        return _encode_node(self._node)

    @classmethod
    def from_data(cls, data: Any, guard: Guard = _no_guard,
                  before_write: Callable[[], None] | None = None) -> MemoryObject:
        return cls(_decode_node(data) if data else _Node(), guard, before_write)

    def replace_data(self, data: Any) -> None:
        """Reset this tree to ``data`` in place (rollback), keeping hooks and outstanding views."""
        self._node.clear()
        self._node.update(_decode_node(data) if data else _Node())


def _detached(value: Any) -> Any:
    """A copy of a mutable value crossing the API (in through ``set``, out through ``get``).

    Change tracking (rollback of a failed action, snapshots of an in-flight one) only sees
    ``set``/``delete``; an aliased container or model mutated in place would bypass it.
    """
    if type(value) is str:  # the common case, answered before the ABC check of BaseModel (~0.3 us)
        return value
    return copy.deepcopy(value) if isinstance(value, (list, dict, BaseModel)) else value


def _to_plain(value: Any) -> Any:
    if isinstance(value, _Node):
        return {k: _to_plain(v) for k, v in value.items()}
    return _detached(value)


_PLAIN = frozenset({str, int, float, bool, type(None)})  # stored as they are (codec.encode's identity cases)


def _encode_node(node: _Node) -> dict[str, Any]:
    # One pass, scalars kept without a codec call: every key's state is encoded at each checkpoint.
    values: dict[str, Any] = {}
    objects: dict[str, Any] = {}
    for k, v in node.items():
        if type(v) in _PLAIN:
            values[k] = v
        elif isinstance(v, _Node):
            objects[k] = _encode_node(v)
        else:
            values[k] = codec.encode(v)
    data: dict[str, Any] = {}
    if values:
        data["v"] = values
    if objects:
        data["o"] = objects
    return data


def _decode_node(data: dict[str, Any]) -> _Node:
    node = _Node()
    for k, v in data.get("v", {}).items():
        node[k] = codec.decode(v)
    for k, v in data.get("o", {}).items():
        node[k] = _decode_node(v)
    return node
