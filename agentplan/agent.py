"""The :class:`Agent` base class users subclass."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from agentplan.decorators import ACTION_MARK, RESOURCE_MARK, EventSelector, check_event_selectors
from agentplan.exceptions import PlanCompileError
from agentplan.resources import ResourceDescriptor, ResourceType


class ActionSpec:
    """An action: name, triggering event types, function and its per-action config."""

    __slots__ = ("name", "events", "func", "config", "is_async")

    def __init__(self, name: str, events: tuple[EventSelector, ...], func: Callable[..., Any],
                 config: dict[str, Any] | None = None) -> None:
        self.name = name
        self.events = check_event_selectors(events, f"action {name!r}")
        self.func = func
        self.config = dict(config or {})
        self.is_async = inspect.iscoroutinefunction(func)  # fixed per action; checked once


def infer_resource_type(instance: Any) -> ResourceType:
    """The type of a resource given without one (``env.add_resource(name, descriptor)``)."""
    from agentplan.prompts import Prompt
    from agentplan.tools import Tool

    if isinstance(instance, Prompt):
        return ResourceType.PROMPT
    if isinstance(instance, Tool) or (
            callable(instance) and not isinstance(instance, (type, ResourceDescriptor))):
        return ResourceType.TOOL
    if isinstance(instance, ResourceDescriptor):
        kind = instance.resource_type()
        if kind is not None:
            return kind
    kind = getattr(instance, "resource_type", None)
    if isinstance(kind, ResourceType):
        return kind
    raise PlanCompileError(f"cannot tell the resource type of {instance!r}; pass it: add_resource(name, type, value)")


class Agent:
    """Base class of agents: actions and resources from decorators or ``add_*`` calls."""

    def __init__(self) -> None:
        self._actions: dict[str, ActionSpec] = {}
        self._resources: dict[ResourceType, dict[str, Any]] = {t: {} for t in ResourceType}

    # -- programmatic declaration ----------------------------------------------------------
    def add_action(self, name: str, events: list[EventSelector] | tuple[EventSelector, ...],
                   func: Callable[..., Any], **config: Any) -> Agent:
        if name in self._actions or name in self._declared_actions():
            raise PlanCompileError(f"duplicate action name {name!r}")
        self._actions[name] = ActionSpec(name, tuple(events), func, config)
        return self

    def add_resource(self, name: str, type_or_value: ResourceType | Any, value: Any = None) -> Agent:
        kind, instance = (type_or_value, value) if isinstance(type_or_value, ResourceType) and value is not None \
            else (infer_resource_type(type_or_value), type_or_value)
        if any(name in by_name for by_name in self._resources.values()) or name in self._declared_resources():
            raise PlanCompileError(f"duplicate resource name {name!r}")
        self._resources[kind][name] = instance
        return self

    # -- discovery ------------------------------------------------------------------------------
    @classmethod
    def _members(cls) -> list[tuple[str, Any]]:
        seen: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            for name, member in vars(klass).items():
                seen[name] = member
        return list(seen.items())

    @classmethod
    def _declared_actions(cls) -> dict[str, ActionSpec]:
        found: dict[str, ActionSpec] = {}
        for name, member in cls._members():
            func = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
            events = getattr(func, ACTION_MARK, None)
            if events is not None:
                if not isinstance(member, staticmethod):
                    raise PlanCompileError(f"action {cls.__name__}.{name} must be a @staticmethod")
                found[name] = ActionSpec(name, events, func)
        return found

    @classmethod
    def _declared_resources(cls) -> dict[str, tuple[ResourceType, Callable[..., Any]]]:
        found: dict[str, tuple[ResourceType, Callable[..., Any]]] = {}
        for name, member in cls._members():
            func = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
            kind = getattr(func, RESOURCE_MARK, None)
            if kind is not None:
                found[name] = (kind, func)
        return found

    def actions(self) -> dict[str, ActionSpec]:
        """All actions: decorated ones first, then added ones."""
        declared = self._declared_actions()
        for name in self._actions:
            if name in declared:
                raise PlanCompileError(f"duplicate action name {name!r}")
        return {**declared, **self._actions}

    def resources(self) -> dict[str, tuple[ResourceType, Any]]:
        """All resources by name: decorated ones are evaluated (tools stay functions)."""
        out: dict[str, tuple[ResourceType, Any]] = {}
        for name, (kind, func) in self._declared_resources().items():
            out[name] = (kind, func if kind is ResourceType.TOOL else func())
        for kind, by_name in self._resources.items():
            for name, value in by_name.items():
                if name in out:
                    raise PlanCompileError(f"duplicate resource name {name!r}")
                out[name] = (kind, value)
        return out
