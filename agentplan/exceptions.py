"""Exceptions of the agent core, all rooted at :class:`AgentPlanError`."""

from __future__ import annotations


class AgentPlanError(Exception):
    """Root of every error raised by ``agentplan``."""


class PlanCompileError(AgentPlanError):
    """The agent cannot be compiled into a plan (duplicate names, missing resources, ...)."""


class ResourceError(AgentPlanError):
    """A resource is unknown, of the wrong type, or cannot be built."""


class MemoryValueError(AgentPlanError, TypeError):
    """A value cannot be stored in memory because it would not survive persistence."""


class SerializationError(AgentPlanError):
    """A value, event or state record cannot be encoded or decoded."""


class DurableCallError(AgentPlanError):
    """Misuse of a durable call, e.g. touching memory from inside one."""


class ActionError(AgentPlanError):
    """An action failed permanently; carries the action name and the original exception."""

    def __init__(self, action: str, cause: BaseException) -> None:
        super().__init__(f"action {action!r} failed: {type(cause).__name__}: {cause}")
        self.action = action
        self.cause = cause


class TransientError(AgentPlanError):
    """A failure expected to go away by itself (LLM 429/5xx, timeout, connection refused).

    The engine retries the action with jittered backoff instead of failing the run; it is the only
    layer that retries, up to ``AgentConfiguration.transient_retry_limit`` times. ``retry_after_s``
    is the server's Retry-After.
    """

    def __init__(self, message: str, *, kind: str = "transient", retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after_s = retry_after_s


class ChatModelError(AgentPlanError):
    """The model answered, but the answer is unusable (e.g. invalid structured output)."""


class ToolCallLimitExceeded(ChatModelError):
    """The model kept requesting tools beyond the configured number of rounds."""


class AgentRunError(AgentPlanError):
    """A run failed under the ``fail`` error-handling strategy (raised by the local runner)."""

    def __init__(self, key: object, cause: BaseException) -> None:
        super().__init__(f"run for key {key!r} failed: {cause}")
        self.key = key
        self.cause = cause
