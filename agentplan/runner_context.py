"""The context an action receives: events out, memory, resources, config, durable calls."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from agentplan.config import AgentConfiguration
from agentplan.events import Event
from agentplan.memory import MemoryObject
from agentplan.metric_group import MetricGroup
from agentplan.metrics import MetricsSink
from agentplan.resources import ResourceType

if TYPE_CHECKING:
    from agentplan.long_term_memory import LongTermMemory

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

#: Marks a method that journals its own model calls and writes the key's state itself (a memory set's
#: ``add``): ``ctx.durable_execute(_async)`` calls it directly instead of recording its result, since
#: a recorded result would skip the state write on replay. The value names its async variant.
SELF_JOURNALED = "_agentplan_self_journaled"


def self_journaled(async_variant: str) -> Callable[[F], F]:
    def mark(func: F) -> F:
        setattr(func, SELF_JOURNALED, async_variant)
        return func

    return mark


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

    @property
    def long_term_memory(self) -> LongTermMemory:
        """Per-key memory sets searched by meaning, kept in the key's state (see agentplan.long_term_memory)."""
        from agentplan.long_term_memory import LongTermMemory

        return LongTermMemory(self)

    @abstractmethod
    def get_resource(self, name: str, type: ResourceType,  # noqa: A002 - Flink Agents name
                     metric_group: MetricGroup | None = None) -> Any:
        """A declared resource, built on first use. (``metric_group``: accepted for Flink Agents 0.3;
        resources report through the engine's metrics.)"""

    @property
    def agent_metric_group(self) -> MetricGroup:
        """User metrics of the agent (Flink Agents 0.3)."""
        raise NotImplementedError

    @property
    def action_metric_group(self) -> MetricGroup:
        """User metrics of the running action: a sub-group of the agent's, named after the action."""
        raise NotImplementedError

    def close(self) -> None:
        """Flink Agents 0.3 API; the engine owns the context's resources, so nothing to release."""
        return None

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
    def durable_execute(self, fn: Callable[..., T], *args: Any, reconciler: Callable[[], Any] | None = None,
                        **kwargs: Any) -> T:
        """Call ``fn`` once per run: a replayed run gets the recorded result back.

        ``reconciler`` (keyword only, not passed to ``fn``) is called instead of ``fn`` when a replay finds
        the call started but no result recorded: its return value is the call's result, what it raises
        the call's failure. See :meth:`durable_execute_async` for when that can happen."""

    @abstractmethod
    async def durable_execute_async(self, fn: Callable[..., T | Awaitable[T]], *args: Any,
                                    reconciler: Callable[[], Any] | None = None, **kwargs: Any) -> T:
        """Async form of :meth:`durable_execute`; sync ``fn`` runs in a thread.

        With a ``reconciler``, on the Kafka worker the call's start is committed (in the key's state, in
        a Kafka transaction) before ``fn`` runs: a worker killed while ``fn`` runs leaves a committed
        start without a committed result, and the replay calls ``reconciler`` instead of ``fn``."""
