"""The user's code the worker runs, loaded by import path: the agent, its resources, the input model.

Every failure names the setting it came from, so a typo fails at start-up with one line.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from agentplan import Agent, AgentConfiguration, AgentPlan, AgentPlanError
from agentplan.codec import resolve_path
from worker.exceptions import ConfigurationError

__all__ = ["compile_plan", "load_agent", "load_agent_config", "load_model"]


def load_agent(path: str) -> Agent:
    """``module:Class`` (or ``module:instance``) -> an Agent instance; ``file.yaml#name`` -> the agent of
    that name in a YAML agent file."""
    file, hash_sign, name = path.rpartition("#")
    if hash_sign and file.endswith((".yaml", ".yml")):
        from agentplan.yaml_agents import load_agents

        try:
            agents = load_agents(file)
        except AgentPlanError as exc:
            raise ConfigurationError("agent", str(exc)) from None
        if name not in agents:
            raise ConfigurationError("agent", f"{file} has no agent named {name!r} (it has: {sorted(agents)})")
        return agents[name]
    try:
        target = resolve_path(path)
    except Exception as exc:
        raise ConfigurationError("agent", f"cannot import {path!r}: {exc}") from exc
    agent = target() if isinstance(target, type) else target
    if not isinstance(agent, Agent):
        raise ConfigurationError("agent", f"{path!r} is not an Agent subclass or instance")
    return agent


def load_agent_config(path: Path | None) -> AgentConfiguration:
    """The agent configuration (``--agent-config`` file and ``AGENTPLAN_*`` variables); a bad value is one line
    naming the field, e.g. ``budgets: budgets sets a USD limit but no prices are configured``."""
    try:
        return AgentConfiguration.load(path)
    except AgentPlanError as exc:
        cause = exc.__cause__
        if isinstance(cause, ValidationError):
            first = cause.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "agent configuration"
            message = str(first["msg"]).removeprefix("Value error, ")
            raise ConfigurationError("agent-config", f"{path or 'AGENTPLAN_* variables'}: {where}: {message}") from None
        raise ConfigurationError("agent-config", str(exc)) from None


def compile_plan(agent: Agent, config: AgentConfiguration, resources: dict[str, str]) -> AgentPlan:
    """The agent plus environment resources given by import path."""
    from agentplan.agent import infer_resource_type

    extra = {}
    for name, target in resources.items():
        try:
            value = resolve_path(target)
            extra[name] = (infer_resource_type(value), value)
        except Exception as exc:
            raise ConfigurationError("resource", f"{name}={target}: {exc}") from exc
    try:
        return AgentPlan.from_agent(agent, config, extra)
    except AgentPlanError as exc:
        raise ConfigurationError("agent", str(exc)) from exc


def load_model(path: str | None) -> type | None:
    """The pydantic model input records must match, or None."""
    if path is None:
        return None
    from pydantic import BaseModel

    try:
        model = resolve_path(path)
    except Exception as exc:
        raise ConfigurationError("input-model", f"cannot import {path!r}: {exc}") from exc
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise ConfigurationError("input-model", f"{path!r} is not a pydantic model class")
    return model
