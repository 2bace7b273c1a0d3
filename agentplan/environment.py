"""The execution environment API: ``AgentsExecutionEnvironment.get_execution_environment()``.

The local runner (``agentplan.runtime.local_execution_environment``) runs an agent over a list, in
process, on the shared engine; the Kafka environment (``worker.KafkaExecutionEnvironment``) offers
the same builder over topics.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentplan.agent import Agent, infer_resource_type
from agentplan.config import AgentConfiguration
from agentplan.exceptions import AgentPlanError, PlanCompileError
from agentplan.plan import AgentPlan
from agentplan.resources import ResourceType

if TYPE_CHECKING:  # the runner subclasses this module's class: imported where it is returned
    from agentplan.runtime.local_execution_environment import LocalExecutionEnvironment


class AgentsExecutionEnvironment:
    """Entry point: ``AgentsExecutionEnvironment.get_execution_environment()``."""

    def __init__(self, config: AgentConfiguration | None = None) -> None:
        self.config = config or AgentConfiguration.load()
        self.resources: dict[str, tuple[ResourceType, Any]] = {}
        self.agents: dict[str, Agent] = {}  # named by load_yaml

    @staticmethod
    def get_execution_environment(env: Any = None, **kwargs: Any) -> LocalExecutionEnvironment:
        """The local environment. ``env`` exists for Flink Agents compatibility and must be None."""
        if env is not None:
            raise AgentPlanError("a stream environment was given; for Kafka use worker.KafkaExecutionEnvironment")
        from agentplan.runtime.local_execution_environment import (
            LocalExecutionEnvironment,
        )

        return LocalExecutionEnvironment(**kwargs)

    def get_config(self, path: str | None = None) -> AgentConfiguration:
        """The agent configuration; with ``path``, first loaded from that YAML file (ours, or a Flink
        ``config.yaml`` whose ``agent:`` section holds the settings)."""
        if path is not None:
            loaded = AgentConfiguration.load(path)
            for name in loaded.model_fields_set - {"extra"}:
                setattr(self.config, name, getattr(loaded, name))
            self.config.extra.update(loaded.extra)
        return self.config

    def add_resource(self, name: str, type_or_value: ResourceType | Any,
                     value: Any = None) -> AgentsExecutionEnvironment:
        if name in self.resources:
            raise PlanCompileError(f"duplicate resource name {name!r}")
        if isinstance(type_or_value, ResourceType) and value is not None:
            self.resources[name] = (type_or_value, value)
        else:
            self.resources[name] = (infer_resource_type(type_or_value), type_or_value)
        return self

    def named_agent(self, name: str) -> Agent:
        """An agent registered by name (``load_yaml``)."""
        if name not in self.agents:
            raise AgentPlanError(f"no agent named {name!r} (known: {sorted(self.agents)}); agents are named by "
                                 "env.load_yaml(path) - otherwise pass the Agent itself to apply()")
        return self.agents[name]

    def load_yaml(self, paths: str | Path | list[str | Path]) -> AgentsExecutionEnvironment:
        """Load the agents of YAML files (Flink Agents 0.3's format); ``apply("name")`` then runs one."""
        from agentplan.yaml_agents import YamlAgentError, load_agents

        for path in paths if isinstance(paths, list) else [paths]:
            for name, agent in load_agents(path).items():
                if name in self.agents:
                    raise YamlAgentError(f"{path}: agent {name!r} is already loaded from another file")
                self.agents[name] = agent
        return self

    def compile(self, agent: Agent) -> AgentPlan:
        return AgentPlan.from_agent(agent, self.config, self.resources)
