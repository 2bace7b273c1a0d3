"""Agent configuration: in code, from a YAML file, or from ``AGENTPLAN_*`` environment variables.

Precedence (lowest to highest): defaults, YAML file, environment, explicit keyword arguments.
"""

from __future__ import annotations

import enum
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentplan.budgets import BudgetSettings
from agentplan.exceptions import AgentPlanError

ENV_PREFIX = "AGENTPLAN_"
#: Longest Retry-After honoured; a longer one (or a hostile server) still retries after this long.
RETRY_AFTER_MAX_S = 300.0


class ErrorHandlingStrategy(str, enum.Enum):
    """What happens when an action raises a non-transient error.

    A :class:`~agentplan.exceptions.TransientError` (model unreachable, timed out, 5xx, 429) is not
    subject to the strategy: the engine retries the action ``transient_retry_limit`` times (by default
    until the endpoint answers), the one retry layer of a model call.

    fail: the run fails (local runner raises; the Kafka worker dead-letters the record, since
    one bad record must never stop the fleet). retry: retry the action ``max_retries`` times
    with backoff, then fail. ignore: log and skip the failing action. dead_letter: the run
    fails and the record goes to the dead-letter list/topic without raising.
    """

    FAIL = "fail"
    RETRY = "retry"
    IGNORE = "ignore"
    DEAD_LETTER = "dead-letter"


class _NamedEnum(str, enum.Enum):
    """Values are the member names (upstream's Java enums); any letter case is accepted."""

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if isinstance(value, str):
            return cls.__members__.get(value.upper().replace("-", "_"))
        return None


class ShortTermMemoryTtlUpdate(_NamedEnum):
    """What renews a key's short-term memory TTL: writes only, or reads and writes."""

    ON_CREATE_AND_WRITE = "ON_CREATE_AND_WRITE"
    ON_READ_AND_WRITE = "ON_READ_AND_WRITE"


class ShortTermMemoryTtlVisibility(_NamedEnum):
    """Whether expired memory that was not cleaned up yet is still visible to the next run."""

    NEVER_RETURN_EXPIRED = "NEVER_RETURN_EXPIRED"
    RETURN_EXPIRED_IF_NOT_CLEANED_UP = "RETURN_EXPIRED_IF_NOT_CLEANED_UP"


#: Flink Agents 0.3 configuration keys -> our field names (other keys: ``-`` becomes ``_``).
UPSTREAM_KEYS: dict[str, str] = {
    "short-term-memory.state-ttl.ms": "short_term_memory_state_ttl_ms",
    "short-term-memory.state-ttl.update-type": "short_term_memory_state_ttl_update_type",
    "short-term-memory.state-ttl.visibility": "short_term_memory_state_ttl_visibility",
    "retry-wait-interval": "retry_backoff_s",
}


def field_name(key: str) -> str:
    return UPSTREAM_KEYS.get(key) or key.replace("-", "_")


class AgentConfiguration(BaseModel):
    """Settings of the event loop and the built-in actions."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_enum_values=False)

    error_handling_strategy: ErrorHandlingStrategy = ErrorHandlingStrategy.FAIL
    max_retries: int = Field(3, ge=0, description="retries of an action that raised a non-transient error "
                                                  "(strategy retry only)")
    retry_backoff_s: float = Field(0.2, ge=0, description="first backoff; doubles per attempt, jittered")
    retry_backoff_max_s: float = Field(30.0, gt=0, description="cap of any backoff (a Retry-After aside)")
    max_tool_call_rounds: int = Field(10, ge=0, description="model->tools->model rounds per chat request")
    structured_output_retries: int = Field(1, ge=0, description="re-asks when output_schema parsing fails")
    max_concurrent_runs: int = Field(1024, ge=1, description="runs (keys) in progress at once")
    idle_state_cache_bytes: int = Field(
        32 * 2**20, ge=0, description="memory for idle keys' decoded state, kept after each commit so the "
                                      "key's next input skips the state-store read; 0 reloads every time")
    transient_retry_limit: int | None = Field(
        None, ge=0, description="retries of a transient failure (model unreachable, timeout, 5xx, 429); None "
                                "retries until it recovers")
    short_term_memory_state_ttl_ms: int = Field(
        0, ge=0, description="short-term memory of a key expires this long after its last renewal (0: never); "
                             "key short-term-memory.state-ttl.ms")
    short_term_memory_state_ttl_update_type: ShortTermMemoryTtlUpdate = ShortTermMemoryTtlUpdate.ON_READ_AND_WRITE
    short_term_memory_state_ttl_visibility: ShortTermMemoryTtlVisibility = \
        ShortTermMemoryTtlVisibility.NEVER_RETURN_EXPIRED
    budgets: BudgetSettings | None = Field(None, description="per-key token and cost budgets (agentplan.budgets)")
    extra: dict[str, Any] = Field(default_factory=dict, description="user settings, read with get()")

    @classmethod
    def load(cls, path: str | Path | None = None, env: dict[str, str] | None = None,
             **overrides: Any) -> AgentConfiguration:
        data: dict[str, Any] = {}
        if path is not None:
            try:
                loaded = yaml.safe_load(Path(path).read_text()) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise AgentPlanError(f"agent config file {path}: {exc}") from exc
            if not isinstance(loaded, dict):
                raise AgentPlanError(f"agent config file {path}: expected a mapping at top level")
            if set(loaded) == {"agent"} and isinstance(loaded["agent"], dict):
                loaded = _flatten(loaded["agent"])  # a Flink config.yaml: the agent: section, nested keys dotted
            data.update({field_name(str(k)): v for k, v in loaded.items()})
        environ = os.environ if env is None else env
        for name in cls.model_fields:
            if name in ("extra", "budgets"):  # mappings: set in the YAML file
                continue
            raw = environ.get(ENV_PREFIX + name.upper())
            if raw is not None:
                data[name] = None if raw.lower() in ("none", "") else raw
        data.update(overrides)
        known = {k: v for k, v in data.items() if k in cls.model_fields}
        unknown = {k: v for k, v in data.items() if k not in cls.model_fields}
        known.setdefault("extra", {})
        known["extra"] = {**known["extra"], **unknown}
        try:
            return cls(**known)
        except ValidationError as exc:
            raise AgentPlanError(f"invalid agent configuration: {exc}") from exc

    def get(self, key: str | ConfigOption, default: Any = None) -> Any:
        """A setting by name (ours or Flink Agents' key) or :class:`ConfigOption`."""
        if isinstance(key, ConfigOption):
            default = key.get_default_value() if default is None else default
            key = key.get_key()
        name = field_name(key)
        if name in type(self).model_fields and name != "extra":
            return getattr(self, name)
        return self.extra.get(name, default)

    def set(self, key: str | ConfigOption, value: Any) -> None:
        name = field_name(key.get_key() if isinstance(key, ConfigOption) else key)
        if name in type(self).model_fields and name != "extra":
            setattr(self, name, value)  # validated: a pydantic ValidationError (a ValueError) names the field
        else:
            self.extra[name] = value

    # Flink Agents 0.3's typed accessors.
    def set_str(self, key: str, value: str) -> None:
        self.set(key, value)

    def set_int(self, key: str, value: int) -> None:
        self.set(key, int(value))

    def set_float(self, key: str, value: float) -> None:
        self.set(key, float(value))

    def set_bool(self, key: str, value: bool) -> None:
        self.set(key, bool(value))

    def get_str(self, key: str, default: str | None = None) -> str | None:
        value = self.get(key, default)
        return None if value is None else str(value.value if isinstance(value, enum.Enum) else value)

    def get_int(self, key: str, default: int | None = None) -> int | None:
        value = self.get(key, default)
        return None if value is None else int(value)

    def get_float(self, key: str, default: float | None = None) -> float | None:
        value = self.get(key, default)
        return None if value is None else float(value)

    def get_bool(self, key: str, default: bool | None = None) -> bool | None:
        value = self.get(key, default)
        if isinstance(value, str):
            return value.strip().lower() in ("true", "1", "yes")
        return None if value is None else bool(value)

    def backoff(self, attempt: int) -> float:
        """Exponential backoff for 0-based ``attempt``, capped."""
        return float(min(self.retry_backoff_max_s, self.retry_backoff_s * (2 ** min(attempt, 64))))

    def retry_delay(self, attempt: int, retry_after_s: float | None = None,
                    rng: Callable[[], float] = random.random) -> float:
        """The wait before retry ``attempt`` (0-based): a uniform draw between half and all of
        :meth:`backoff`, so that callers failing together do not retry together. A server's
        ``Retry-After`` is waited in full (up to ``RETRY_AFTER_MAX_S``) plus up to a tenth more."""
        if retry_after_s is not None:
            return min(max(0.0, retry_after_s), RETRY_AFTER_MAX_S) * (1.0 + 0.1 * rng())
        return self.backoff(attempt) * (0.5 + 0.5 * rng())


def _flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class ConfigOption:
    """A typed configuration key with its default (Flink Agents 0.3)."""

    def __init__(self, key: str, config_type: type, default: Any = None) -> None:
        self._key = key
        self._type = config_type
        self._default = default

    def get_key(self) -> str:
        return self._key

    def get_type(self) -> type:
        return self._type

    def get_default_value(self) -> Any:
        return self._default

    def __repr__(self) -> str:
        return f"ConfigOption({self._key!r})"


class AgentExecutionOptions:
    """Flink Agents 0.3's execution options, for ``env.get_config().set(AgentExecutionOptions.X, value)``."""

    ERROR_HANDLING_STRATEGY = ConfigOption("error-handling-strategy", ErrorHandlingStrategy, ErrorHandlingStrategy.FAIL)
    MAX_RETRIES = ConfigOption("max-retries", int, 3)
    RETRY_WAIT_INTERVAL = ConfigOption("retry-wait-interval", int, 1)
    NUM_ASYNC_THREADS = ConfigOption("num-async-threads", int, (os.cpu_count() or 1) * 2)
    CHAT_ASYNC = ConfigOption("chat.async", bool, True)
    TOOL_CALL_ASYNC = ConfigOption("tool-call.async", bool, True)
    RAG_ASYNC = ConfigOption("rag.async", bool, True)
    SHORT_TERM_MEMORY_STATE_TTL_MS = ConfigOption("short-term-memory.state-ttl.ms", int, 0)
    SHORT_TERM_MEMORY_STATE_TTL_UPDATE_TYPE = ConfigOption(
        "short-term-memory.state-ttl.update-type", ShortTermMemoryTtlUpdate, ShortTermMemoryTtlUpdate.ON_READ_AND_WRITE)
    SHORT_TERM_MEMORY_STATE_TTL_VISIBILITY = ConfigOption(
        "short-term-memory.state-ttl.visibility", ShortTermMemoryTtlVisibility,
        ShortTermMemoryTtlVisibility.NEVER_RETURN_EXPIRED)
