"""Decorators that declare actions and resources on :class:`~agentplan.agent.Agent` subclasses.

They may sit above or below ``@staticmethod``; the marker is stored on the function itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from agentplan.events import Event
from agentplan.exceptions import PlanCompileError
from agentplan.resources import ResourceType

F = TypeVar("F")

ACTION_MARK = "_agentplan_action_events"
RESOURCE_MARK = "_agentplan_resource_type"


def _function_of(obj: Any) -> Callable[..., Any]:
    return obj.__func__ if isinstance(obj, (staticmethod, classmethod)) else obj


def action(*event_types: type[Event]) -> Callable[[F], F]:
    """Run the decorated ``(event, ctx)`` function for every event of the given types."""
    if not event_types:
        raise PlanCompileError("@action needs at least one event type, e.g. @action(InputEvent)")
    for event_type in event_types:
        if not (isinstance(event_type, type) and issubclass(event_type, Event)):
            raise PlanCompileError(f"@action arguments must be Event subclasses, got {event_type!r}")

    def mark(obj: F) -> F:
        setattr(_function_of(obj), ACTION_MARK, tuple(event_types))
        return obj

    return mark


def _resource(kind: ResourceType) -> Callable[[F], F]:
    def mark(obj: F) -> F:
        setattr(_function_of(obj), RESOURCE_MARK, kind)
        return obj

    return mark


prompt = _resource(ResourceType.PROMPT)
prompt.__doc__ = "The decorated function returns a :class:`Prompt`; its name is the resource name."
mcp_server = _resource(ResourceType.MCP_SERVER)
mcp_server.__doc__ = ("The decorated function returns an MCP server ``ResourceDescriptor``; the server's tools and "
                      "prompts become resources under their own names.")
skills = _resource(ResourceType.SKILLS)
skills.__doc__ = "The decorated function returns :class:`~agentplan.skill.Skills` (directories with a SKILL.md)."
chat_model_connection = _resource(ResourceType.CHAT_MODEL_CONNECTION)
chat_model_connection.__doc__ = "The decorated function returns a connection ``ResourceDescriptor``."
chat_model_setup = _resource(ResourceType.CHAT_MODEL)
chat_model_setup.__doc__ = "The decorated function returns a chat model setup ``ResourceDescriptor``."
tool = _resource(ResourceType.TOOL)
tool.__doc__ = "The decorated function is a tool; its schema comes from its signature and docstring."
embedding_model_connection = _resource(ResourceType.EMBEDDING_MODEL_CONNECTION)
embedding_model_connection.__doc__ = "The decorated function returns an embedding connection ``ResourceDescriptor``."
embedding_model_setup = _resource(ResourceType.EMBEDDING_MODEL)
embedding_model_setup.__doc__ = "The decorated function returns an embedding model setup ``ResourceDescriptor``."
vector_store = _resource(ResourceType.VECTOR_STORE)
vector_store.__doc__ = "The decorated function returns a vector store ``ResourceDescriptor``."
