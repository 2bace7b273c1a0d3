"""Per-key LLM budgets: token and cost limits over a rolling window and over the key's lifetime.

Usage is part of the key's state. The engine adds a model call's tokens and cost at the moment the
call's result is journaled, so the usage and the journal entry reach the state store (the changelog,
on the Kafka worker) in the same snapshot: a replayed run finds the journaled result and adds nothing,
and a call whose result was never committed is not counted either.

A budget is checked before a run starts. A run that starts within budget finishes (its own calls
may take the key past the limit); the key's next run then waits (``defer``, until enough usage has
left the rolling window) or is dead-lettered with reason ``budget-exceeded``. A lifetime cap never
frees up, so a run refused by one is always dead-lettered.

Configuration (the ``budgets`` section of the agent configuration)::

    budgets:
      window_s: 86400                      # rolling window of the *_per_window limits
      tokens_per_window: 200000
      usd_per_window: 2.0
      lifetime_usd: 50.0
      on_exceeded: defer                   # or dead-letter
      prices:                              # USD per 1M tokens, by model ("*" for any other model)
        gpt-4o-mini: {prompt: 0.15, completion: 0.60}
      prices_file: prices.yaml             # the same mapping in a YAML/JSON file (entries above win)
      key_prefixes:                        # overrides for keys starting with a prefix (longest wins)
        "vip-": {usd_per_window: 20.0}
      tenant_field: tenant                 # input field naming the tenant
      tenants:                             # overrides by tenant (win over key prefixes)
        acme: {tokens_per_window: 1000000, on_exceeded: dead-letter}
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentplan.exceptions import AgentPlanError
from agentplan.metrics import MetricsSink

logger = logging.getLogger(__name__)

#: Rolling windows are kept as this many buckets: usage leaves the window a bucket at a time, so a
#: deferred key may wake up to window_s / WINDOW_BUCKETS later than an exact log would let it.
WINDOW_BUCKETS = 24
#: A deferred key re-checks at least this often (a clock step or a changed configuration is noticed).
MAX_DEFER_SLEEP_S = 300.0
DLQ_REASON = "budget-exceeded"


class OnExceeded(str, enum.Enum):
    DEFER = "defer"
    DEAD_LETTER = "dead-letter"


class ModelPrice(BaseModel):
    """USD per one million tokens."""

    model_config = ConfigDict(extra="forbid")

    prompt: float = Field(ge=0)
    completion: float = Field(ge=0)


class BudgetLimits(BaseModel):
    """Limits of one key; unset limits do not apply (or, in an override, keep the general value)."""

    model_config = ConfigDict(extra="forbid")

    tokens_per_window: int | None = Field(None, ge=0)
    usd_per_window: float | None = Field(None, ge=0)
    lifetime_tokens: int | None = Field(None, ge=0)
    lifetime_usd: float | None = Field(None, ge=0)
    on_exceeded: OnExceeded | None = None

    def merged(self, override: BudgetLimits) -> BudgetLimits:
        return self.model_copy(update=override.model_dump(exclude_unset=True))


class BudgetSettings(BudgetLimits):
    """The ``budgets`` section of the agent configuration."""

    window_s: float = Field(86_400.0, gt=0)
    on_exceeded: OnExceeded | None = OnExceeded.DEFER
    prices: dict[str, ModelPrice] = Field(default_factory=dict)
    prices_file: Path | None = None
    key_prefixes: dict[str, BudgetLimits] = Field(default_factory=dict)
    tenant_field: str | None = None
    tenants: dict[str, BudgetLimits] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _load_prices_file(self) -> BudgetSettings:
        if self.prices_file is not None:
            self.prices = {**_read_prices(self.prices_file), **self.prices}
        wants_usd = [f"{name}.{field}" for name, limits in self._all_limits()
                     for field in ("usd_per_window", "lifetime_usd") if getattr(limits, field) is not None]
        if wants_usd and not self.prices:
            raise ValueError(f"{wants_usd[0]} is a USD limit but no prices are configured "
                             "(budgets.prices or budgets.prices_file)")
        if self.tenants and not self.tenant_field:
            raise ValueError("budgets.tenants needs budgets.tenant_field (the input field naming the tenant)")
        return self

    def _all_limits(self) -> list[tuple[str, BudgetLimits]]:
        return ([("budgets", self)] + [(f"budgets.key_prefixes.{p}", v) for p, v in self.key_prefixes.items()]
                + [(f"budgets.tenants.{t}", v) for t, v in self.tenants.items()])

    @property
    def active(self) -> bool:
        """Whether anything is to be accounted: prices to cost, or a limit to enforce."""
        return bool(self.prices) or any(
            limit is not None for _n, limits in self._all_limits()
            for limit in (limits.tokens_per_window, limits.usd_per_window, limits.lifetime_tokens,
                          limits.lifetime_usd))


def _read_prices(path: Path) -> dict[str, ModelPrice]:
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"budgets.prices_file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"budgets.prices_file {path}: expected a mapping of model -> {{prompt, completion}}")
    prices = {}
    for model, price in data.items():
        try:
            prices[str(model)] = ModelPrice.model_validate(price)
        except ValueError as exc:
            raise ValueError(f"budgets.prices_file {path}: model {model!r}: {exc}") from None
    return prices


class BudgetExceeded(AgentPlanError):
    """A run refused by its key's budget; the Kafka worker dead-letters it with reason ``budget-exceeded``."""

    dlq_reason = DLQ_REASON


# -- per-key usage, as stored in the key's state ("u") ---------------------------------------------------
# {"w": [[bucket start (epoch s), tokens, usd], ...] oldest first, "t": lifetime tokens,
#  "c": lifetime usd, "n": lifetime model calls}

def new_usage() -> dict[str, Any]:
    return {"w": [], "t": 0, "c": 0.0, "n": 0}


@dataclass(frozen=True)
class Refusal:
    """Why a run may not start, and when it may (None: never, it is dead-lettered)."""

    message: str
    wake_at: float | None


class BudgetPolicy:
    """Prices model calls, records usage into a key's state and decides whether a run may start."""

    def __init__(self, settings: BudgetSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.bucket_s = settings.window_s / WINDOW_BUCKETS
        # Longest prefix first, so the most specific override wins.
        self._prefixes = sorted(settings.key_prefixes.items(), key=lambda item: -len(item[0]))
        self._unpriced: set[str] = set()

    # -- accounting ------------------------------------------------------------------------------------
    def price_of(self, model: str) -> ModelPrice | None:
        prices = self.settings.prices
        if model in prices:
            return prices[model]
        # A server may answer with a dated name (gpt-4o-mini-2024-07-18) for the configured one.
        matches = [name for name in prices if name != "*" and model.startswith(name)]
        if matches:
            return prices[max(matches, key=len)]
        return prices.get("*")

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        price = self.price_of(model)
        if price is None:
            if self.settings.prices and model not in self._unpriced:
                self._unpriced.add(model)
                logger.warning("model %r has no price in budgets.prices: its calls cost 0 USD in budgets "
                               "(add it, or a '*' entry)", model)
            return 0.0
        return (prompt_tokens * price.prompt + completion_tokens * price.completion) / 1_000_000

    def record(self, usage: dict[str, Any], model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """Add one model call to ``usage`` (in place); returns its cost in USD."""
        tokens = prompt_tokens + completion_tokens
        usd = self.cost(model, prompt_tokens, completion_tokens)
        now = self.clock()
        start = math.floor(now / self.bucket_s) * self.bucket_s
        window = usage["w"]
        self._expire(window, now)
        if window and window[-1][0] == start:
            window[-1][1] += tokens
            window[-1][2] += usd
        else:
            window.append([start, tokens, usd])
        usage["t"] += tokens
        usage["c"] += usd
        usage["n"] += 1
        return usd

    def _expire(self, window: list[list[Any]], now: float) -> None:
        while window and window[0][0] + self.bucket_s <= now - self.settings.window_s:
            window.pop(0)

    # -- admission -------------------------------------------------------------------------------------
    def limits_for(self, user_key: str, value: Any) -> BudgetLimits:
        limits: BudgetLimits = self.settings
        for prefix, override in self._prefixes:
            if user_key.startswith(prefix):
                limits = limits.merged(override)
                break
        field = self.settings.tenant_field
        if field:
            tenant = value.get(field) if isinstance(value, dict) else getattr(value, field, None)
            by_tenant = self.settings.tenants.get(str(tenant)) if tenant is not None else None
            if by_tenant is not None:
                limits = limits.merged(by_tenant)
        return limits

    def refusal(self, usage: dict[str, Any] | None, limits: BudgetLimits) -> Refusal | None:
        """None when a run may start now."""
        if usage is None:
            usage = new_usage()
        if limits.lifetime_tokens is not None and usage["t"] >= limits.lifetime_tokens:
            return Refusal(f"lifetime token budget spent ({usage['t']} of {limits.lifetime_tokens} tokens)", None)
        if limits.lifetime_usd is not None and usage["c"] >= limits.lifetime_usd:
            return Refusal(f"lifetime cost budget spent ({usage['c']:.6f} of {limits.lifetime_usd} USD)", None)
        now = self.clock()
        window = [b for b in usage["w"] if b[0] + self.bucket_s > now - self.settings.window_s]
        for index, limit, unit in ((1, limits.tokens_per_window, "tokens"), (2, limits.usd_per_window, "USD")):
            if limit is None:
                continue
            used = sum(b[index] for b in window)
            if used < limit:
                continue
            # The key may run again once enough of the oldest buckets have left the window.
            wake_at = now
            for bucket in window:
                used -= bucket[index]
                wake_at = bucket[0] + self.bucket_s + self.settings.window_s
                if used < limit:
                    break
            message = (f"{unit} budget of the last {self.settings.window_s:g}s spent "
                       f"({sum(b[index] for b in window):g} of {limit:g} {unit})")
            if limits.on_exceeded is OnExceeded.DEAD_LETTER:
                return Refusal(message, None)
            return Refusal(message, wake_at)
        return None

    def journaled(self, usage: dict[str, Any] | None, result: Any, metrics: MetricsSink) -> dict[str, Any] | None:
        """The key's usage after a durable result was journaled: a model call's result adds its tokens and cost."""
        from agentplan.chat_models import ChatResult  # here: chat_models -> limits -> config -> budgets

        if not isinstance(result, ChatResult):
            return usage
        usage = usage if usage is not None else new_usage()
        usd = self.record(usage, result.model, result.prompt_tokens, result.completion_tokens)
        if usd:
            cost = getattr(metrics, "llm_cost", None)  # a user's sink may predate it
            if cost is not None:
                cost(result.model or "unknown", usd)
        return usage

    async def admit(self, usage: dict[str, Any] | None, user_key: str, value: Any, describe: str,
                    parked: Callable[[], AbstractContextManager[None]]) -> BudgetExceeded | None:
        """Wait while the key's budget defers its next run; the error to dead-letter it with, or None to run.

        The key's usage cannot change while it waits (its runs are sequential), so a plain sleep until
        the computed wake-up time is enough: a deferred key costs a timer, not CPU. ``parked`` marks the
        wait for the engine (a drain at shutdown does not wait for it).
        """
        limits = self.limits_for(user_key, value)
        logged = False
        while True:
            refusal = self.refusal(usage, limits)
            if refusal is None:
                return None
            if refusal.wake_at is None:
                return BudgetExceeded(f"key {describe}: {refusal.message}")
            delay = min(max(refusal.wake_at - self.clock(), 0.0) + 0.01, MAX_DEFER_SLEEP_S)
            if not logged:
                logger.info("key %s: %s; its next run waits %.1fs", describe, refusal.message, delay)
                logged = True
            with parked():
                await asyncio.sleep(delay)


def budget_policy(settings: BudgetSettings | None) -> BudgetPolicy | None:
    return BudgetPolicy(settings) if settings is not None and settings.active else None
