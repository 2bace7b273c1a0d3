"""The context an action receives: events out, memory, resources, config, durable calls."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from agentplan.config import AgentConfiguration
from agentplan.events import Event
from agentplan.memory import MemoryObject
from agentplan.metrics import MetricsSink
from agentplan.resources import ResourceType

T = TypeVar("T")


class RunnerContext(ABC):
    """What an action may do. One context per action invocation."""

    @abstractmethod
    def send_event(self, event: Event) -> None:
        """Emit an event; it is processed after this action returns."""

    @property
    @abstractmethod
    def key(self) -> Any:
        """The key whose run this is."""

    @property
    @abstractmethod
    def short_term_memory(self) -> MemoryObject:
        """Per-key memory that persists across runs."""

    @property
    @abstractmethod
    def sensory_memory(self) -> MemoryObject:
        """Per-run memory, cleared when the run ends."""

    @abstractmethod
    def get_resource(self, name: str, type: ResourceType) -> Any:  # noqa: A002 - Flink Agents name
        """A declared resource, built on first use."""

    @property
    @abstractmethod
    def action_config(self) -> dict[str, Any]:
        """The ``**config`` given to ``add_action`` for this action."""

    def get_action_config_value(self, key: str, default: Any = None) -> Any:
        return self.action_config.get(key, default)

    @property
    @abstractmethod
    def config(self) -> AgentConfiguration:
        """The agent configuration."""

    @property
    @abstractmethod
    def metrics(self) -> MetricsSink:
        """Where built-in actions report LLM calls; also usable by user actions."""

    @abstractmethod
    def durable_execute(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn`` once per run: a replayed run gets the recorded result back."""

    @abstractmethod
    async def durable_execute_async(self, fn: Callable[..., T | Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Async form of :meth:`durable_execute`; sync ``fn`` runs in a thread."""
