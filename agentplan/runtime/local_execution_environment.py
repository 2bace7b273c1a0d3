"""The local runner: an agent over a list, in process, on the engine the Kafka worker also drives."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from agentplan.agent import Agent
from agentplan.budgets import BudgetExceeded
from agentplan.config import AgentConfiguration, ErrorHandlingStrategy
from agentplan.environment import AgentsExecutionEnvironment
from agentplan.eventlog import write_event_log
from agentplan.exceptions import AgentPlanError, AgentRunError
from agentplan.metrics import MetricsSink, RecordingMetrics
from agentplan.plan import AgentPlan
from agentplan.runtime.engine import Engine
from agentplan.runtime.observe import build_observation, global_tracer_provider
from agentplan.runtime.state_ttl import ShortTermMemoryTtl, now_ms

logger = logging.getLogger(__name__)


class LocalExecutionEnvironment(AgentsExecutionEnvironment):
    """Runs inputs from a list through an agent; keys run concurrently, each key in order."""

    def __init__(self, config: AgentConfiguration | None = None, metrics: MetricsSink | None = None,
                 tracer_provider: Any = None) -> None:
        """``tracer_provider``: an OpenTelemetry tracer provider for GenAI spans of the runs (default: the
        one the application installed globally, if any)."""
        super().__init__(config)
        self.metrics = metrics or RecordingMetrics()
        self.tracer_provider = tracer_provider
        self._agent_name = "agent"
        self._inputs: list[dict[str, Any]] | None = None
        self._plan: AgentPlan | None = None
        self._outputs: list[dict[Any, Any]] = []
        self.dead_letters: list[dict[str, Any]] = []
        self.state: dict[Any, bytes] = {}  # committed per-key state, kept across execute() calls

    def from_list(self, inputs: list[dict[str, Any]]) -> LocalExecutionEnvironment:
        """Inputs as ``{"key": k, "value": v}`` (or Flink Agents' short ``{"k": k, "v": v}``); the key
        defaults to the input's index."""
        normalized = []
        for i, item in enumerate(inputs):
            if isinstance(item, dict) and "value" not in item and "v" in item:
                item = {"value": item["v"], **({"key": item["k"]} if "k" in item else {})}
            if not isinstance(item, dict) or "value" not in item:
                raise AgentPlanError(f"input #{i} must be a dict with 'value' (and optionally 'key'), got {item!r}")
            normalized.append(item)
        self._inputs = normalized
        return self

    def apply(self, agent: Agent | str) -> LocalExecutionEnvironment:
        """Run ``agent``; a string names an agent loaded from YAML with :meth:`load_yaml`."""
        if self._inputs is None:
            raise AgentPlanError("call from_list(...) before apply(agent)")
        name = agent if isinstance(agent, str) else type(agent).__name__
        if isinstance(agent, str):
            agent = self.named_agent(agent)
        self._plan = self.compile(agent)
        self._agent_name = name
        return self

    def to_list(self) -> list[dict[Any, Any]]:
        """The output list, filled by :meth:`execute` with ``{key: output}`` entries in input order."""
        if self._plan is None:
            raise AgentPlanError("call apply(agent) before to_list()")
        return self._outputs

    def execute(self, job_name: str | None = None) -> None:
        """Run every input to completion. (``job_name``: Flink Agents names the job; here it is logged.)"""
        if job_name:
            logger.info("executing job %s", job_name)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(self.execute_async())
            return
        raise AgentPlanError("execute() called inside a running event loop; use await execute_async()")

    def _clean_up_expired_state(self) -> None:
        """Short-term memory TTL cleanup: keys whose memory expired leave the kept state."""
        ttl = ShortTermMemoryTtl.from_config(self.config)
        if ttl is None:
            return
        at = now_ms()
        for key in [k for k, raw in self.state.items() if ttl.persisted_expired(raw, at)[0]]:
            del self.state[key]

    async def execute_async(self) -> None:
        if self._plan is None or self._inputs is None:
            raise AgentPlanError("nothing to execute: use from_list(...).apply(agent) first")
        self._clean_up_expired_state()
        observation = build_observation(self.config, self._agent_name, describe_key=str,
                                        tracer_provider=self.tracer_provider or global_tracer_provider())
        engine = Engine(self._plan, state_loader=self.state.get, metrics=self.metrics, observation=observation)
        try:
            for index, item in enumerate(self._inputs):
                key = item.get("key", index)
                engine.submit(key, item["value"], position=None, meta=index)
            await engine.wait_idle()
        finally:
            await self._plan.aclose()
        deltas = engine.collect()
        for delta in deltas:
            if delta.state is None:
                self.state.pop(delta.key, None)
            else:
                self.state[delta.key] = delta.state
        engine.release(deltas)
        if observation is not None:
            write_event_log(self.config, deltas)
        outputs: list[tuple[int, int, dict[Any, Any]]] = []
        failures = []
        for delta in deltas:
            for seq, (meta, output) in enumerate(delta.outputs):
                outputs.append((meta, seq, {delta.key: output}))
            for meta, value, error in delta.failures:
                failures.append((meta, delta.key, value, error))
        outputs.sort(key=lambda entry: (entry[0], entry[1]))
        self._outputs.extend(entry[2] for entry in outputs)
        failures.sort(key=lambda entry: entry[0])
        for _meta, key, value, error in failures:
            letter = {"key": key, "value": value, "error": str(error)}
            if isinstance(error, BudgetExceeded):
                letter["reason"] = error.dlq_reason
            self.dead_letters.append(letter)
        # retry fails like fail once its retries are spent; only dead-letter collects quietly. A run
        # refused by its budget is dead-lettered as the budget configuration says, whatever the strategy.
        failed = [f for f in failures if not isinstance(f[3], BudgetExceeded)]
        if failed and self.config.error_handling_strategy in (ErrorHandlingStrategy.FAIL,
                                                             ErrorHandlingStrategy.RETRY):
            _meta, key, _value, error = failed[0]
            raise AgentRunError(key, error.cause if hasattr(error, "cause") else error) from error
