"""The Kafka execution environment: the local environment's builder, over topics.

    env = KafkaExecutionEnvironment(bootstrap_servers="127.0.0.1:9092", app_id="reviews")
    env.add_resource("local_llm", descriptor)
    env.from_topic("reviews", value_type=Review).apply(MyAgent()).to_topic("verdicts")
    env.execute()   # runs this process as one worker of the group until SIGTERM
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agentplan import Agent, AgentConfiguration
from agentplan.codec import import_path
from agentplan.environment import AgentsExecutionEnvironment
from worker.config import WorkerSettings
from worker.exceptions import ConfigurationError
from worker.runtime import Worker


class KafkaExecutionEnvironment(AgentsExecutionEnvironment):
    """Builds a :class:`Worker` from code instead of command-line flags."""

    def __init__(self, config: AgentConfiguration | None = None, **settings: Any) -> None:
        super().__init__(config)
        self._settings = settings
        self._agent: Agent | None = None

    def from_topic(self, topic: str, key_selector: str | Callable[[Any], Any] | None = None,
                   value_type: type | None = None) -> KafkaExecutionEnvironment:
        """Read ``topic``. ``key_selector`` names the JSON field used as key for keyless records."""
        if callable(key_selector):
            raise ConfigurationError("key_selector", "give the name of a JSON field; callables cannot be "
                                                     "shared across worker processes")
        self._settings.update(input_topic=topic, key_field=key_selector,
                              input_model=import_path(value_type) if value_type is not None else None)
        return self

    def apply(self, agent: Agent | str) -> KafkaExecutionEnvironment:
        """Run ``agent``; a string names an agent loaded with :meth:`load_yaml`."""
        self._agent = self.named_agent(agent) if isinstance(agent, str) else agent
        return self

    def to_topic(self, topic: str) -> KafkaExecutionEnvironment:
        self._settings["output_topic"] = topic
        return self

    def build(self) -> Worker:
        if self._agent is None:
            raise ConfigurationError("agent", "call apply(agent) before execute()")
        agent_path = import_path(type(self._agent))
        settings = WorkerSettings.load(agent=agent_path, **self._settings)
        try:
            # Resources added in code join the agent's own, as in the local environment.
            plan = self.compile(self._agent)
        except Exception as exc:
            raise ConfigurationError("agent", str(exc)) from exc
        return Worker(settings, agent=self._agent, agent_config=self.config, plan=plan)

    def execute(self, job_name: str | None = None) -> None:
        """Run this process as one worker of the group until SIGTERM (``job_name``: accepted for Flink
        Agents; the group is ``app_id``)."""
        code = self.build().run()
        if code:
            raise SystemExit(code)
