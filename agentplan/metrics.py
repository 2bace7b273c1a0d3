"""The metrics sink the engine and built-in actions report to.

The core stays free of any metrics library; the Kafka worker plugs in a Prometheus sink.
"""

from __future__ import annotations

from typing import Protocol


class MetricsSink(Protocol):
    def action_finished(self, action: str, duration_s: float, error: BaseException | None) -> None: ...

    def run_finished(self, duration_s: float) -> None: ...

    def llm_request(self, model: str, duration_s: float, error: BaseException | None,
                    prompt_tokens: int = 0, completion_tokens: int = 0) -> None: ...

    def transient_retry(self, kind: str) -> None: ...

    def llm_fallback(self, setup: str, fallback: str) -> None: ...
    def llm_cost(self, model: str, usd: float) -> None: ...


class NullMetrics:
    """Discards everything; the default."""

    def action_finished(self, action: str, duration_s: float, error: BaseException | None) -> None:
        return None

    def run_finished(self, duration_s: float) -> None:
        return None

    def llm_request(self, model: str, duration_s: float, error: BaseException | None,
                    prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        return None

    def transient_retry(self, kind: str) -> None:
        return None

    def llm_fallback(self, setup: str, fallback: str) -> None:
        return None

    def llm_cost(self, model: str, usd: float) -> None:
        """The cost of one model call, priced by the budgets' price table (agentplan.budgets)."""
        return None


class RecordingMetrics(NullMetrics):
    """Keeps totals in memory: for the local runner's summary and for tests."""

    def __init__(self) -> None:
        self.actions: dict[str, int] = {}
        self.action_errors: dict[str, int] = {}
        self.runs = 0
        self.llm_requests = 0
        self.llm_errors = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.transient_retries: dict[str, int] = {}
        self.llm_requests_by_model: dict[str, int] = {}
        self.fallbacks: dict[tuple[str, str], int] = {}  # (requested setup, fallback used) -> calls
        self.cost_usd: dict[str, float] = {}

    def action_finished(self, action: str, duration_s: float, error: BaseException | None) -> None:
        self.actions[action] = self.actions.get(action, 0) + 1
        if error is not None:
            self.action_errors[action] = self.action_errors.get(action, 0) + 1

    def run_finished(self, duration_s: float) -> None:
        self.runs += 1

    def llm_request(self, model: str, duration_s: float, error: BaseException | None,
                    prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        self.llm_requests += 1
        self.llm_requests_by_model[model] = self.llm_requests_by_model.get(model, 0) + 1
        self.llm_errors += error is not None
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens

    def transient_retry(self, kind: str) -> None:
        self.transient_retries[kind] = self.transient_retries.get(kind, 0) + 1

    def llm_fallback(self, setup: str, fallback: str) -> None:
        self.fallbacks[(setup, fallback)] = self.fallbacks.get((setup, fallback), 0) + 1
    def llm_cost(self, model: str, usd: float) -> None:
        self.cost_usd[model] = self.cost_usd.get(model, 0.0) + usd
