"""Resources: chat model connections and setups, prompts and tools, built lazily by name."""

from __future__ import annotations

import enum
from abc import ABC
from collections.abc import Callable
from typing import Any

from agentplan import codec
from agentplan.exceptions import ResourceError


class ResourceType(str, enum.Enum):
    """Resource kinds, with Flink Agents 0.3's member names and values."""

    CHAT_MODEL = "chat_model"
    CHAT_MODEL_CONNECTION = "chat_model_connection"
    TOOL = "tool"
    EMBEDDING_MODEL = "embedding_model"
    EMBEDDING_MODEL_CONNECTION = "embedding_model_connection"
    VECTOR_STORE = "vector_store"
    PROMPT = "prompt"
    MCP_SERVER = "mcp_server"
    SKILLS = "skills"


ResourceResolver = Callable[[str, ResourceType], Any]


class Resource(ABC):
    """Base of resources that need other resources (a setup needs its connection and prompt).

    The engine calls :meth:`bind` once after construction so the resource can look up others
    by name lazily, at first use.
    """

    resource_type: ResourceType

    _resolver: ResourceResolver | None = None

    def bind(self, resolver: ResourceResolver) -> None:
        self._resolver = resolver

    def get_resource(self, name: str, type: ResourceType) -> Any:  # noqa: A002 - Flink Agents name
        if self._resolver is None:
            raise ResourceError(f"{type.value} {name!r} requested before the resource was bound to a plan")
        return self._resolver(name, type)


class ResourceDescriptor:
    """Declarative construction of a resource: ``ResourceDescriptor(clazz=..., **kwargs)``.

    ``clazz`` is a class, its import path (``"package.module:Class"``), a dotted path
    (``"package.module.Class"``, as Flink Agents 0.3 writes it) or a ``ResourceName`` constant.
    0.3's ``target_module=`` + ``target_clazz=`` name the class in two parts, and ``arguments=``
    passes the constructor arguments as a dict (merged with ``**kwargs``).
    """

    def __init__(self, clazz: type | str | None = None, *, target_module: str | None = None,
                 target_clazz: str | None = None, arguments: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        from agentplan.resource_names import resolve_class_name

        if clazz is None:
            if not (target_module and target_clazz):
                raise ResourceError("ResourceDescriptor needs clazz=, or target_module= and target_clazz=")
            clazz = f"{target_module}:{target_clazz}"
        if isinstance(clazz, str):
            clazz = resolve_class_name(clazz)
        overlap = sorted(set(arguments or {}) & set(kwargs))
        if overlap:
            raise ResourceError(f"ResourceDescriptor({clazz!r}): {overlap} given both in arguments= and as keywords")
        self._clazz = clazz
        self.arguments = {**(arguments or {}), **kwargs}

    @property
    def clazz(self) -> type:
        if isinstance(self._clazz, str):
            cls = codec.resolve_path(self._clazz)
            if not isinstance(cls, type):
                raise ResourceError(f"{self._clazz!r} is not a class")
            self._clazz = cls
        return self._clazz

    @property
    def clazz_path(self) -> str:
        return self._clazz if isinstance(self._clazz, str) else codec.import_path(self._clazz)

    def resource_type(self) -> ResourceType | None:
        return getattr(self.clazz, "resource_type", None)

    def build(self, resolver: ResourceResolver) -> Any:
        try:
            instance = self.clazz(**self.arguments)
        except TypeError as exc:
            raise ResourceError(f"cannot build {self.clazz_path} with {sorted(self.arguments)}: {exc}") from exc
        if isinstance(instance, Resource):
            instance.bind(resolver)
        return instance

    def to_dict(self) -> dict[str, Any]:
        return {"clazz": self.clazz_path, "arguments": codec.encode(self.arguments)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResourceDescriptor:
        return cls(data["clazz"], arguments=codec.decode(data["arguments"]))

    def __repr__(self) -> str:
        return f"ResourceDescriptor({self.clazz_path}, {sorted(self.arguments)})"
