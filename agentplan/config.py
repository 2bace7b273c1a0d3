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
            data.update({k.replace("-", "_"): v for k, v in loaded.items()})
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

    def get(self, key: str, default: Any = None) -> Any:
        key = key.replace("-", "_")
        if key in type(self).model_fields and key != "extra":
            return getattr(self, key)
        return self.extra.get(key, default)

    def set(self, key: str, value: Any) -> None:
        key = key.replace("-", "_")
        if key in type(self).model_fields and key != "extra":
            setattr(self, key, value)
        else:
            self.extra[key] = value

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
