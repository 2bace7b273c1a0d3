"""The local execution environment: from_list / apply / to_list / execute and their misuse."""

from __future__ import annotations

import asyncio

import pytest

from agentplan import (
    Agent,
    AgentPlanError,
    AgentsExecutionEnvironment,
    InputEvent,
    LocalExecutionEnvironment,
    OpenAIChatModelConnection,
    OutputEvent,
    Prompt,
    ResourceDescriptor,
    ResourceType,
    RunnerContext,
)
from agentplan.config import ErrorHandlingStrategy
from agentplan.metrics import RecordingMetrics
from agentplan.testing.llm_stub import StubLLMServer
from examples.sentiment.custom_types import SentimentAnalysisResult, TextInput
from examples.sentiment.sentiment_agent import SentimentAnalysisAgent
from tests.agentplan.conftest import EnvFactory
from tests.agentplan.support import make_config, run_async


def shout(event: InputEvent, ctx: RunnerContext) -> None:
    ctx.send_event(OutputEvent(output=str(event.input).upper()))
    if event.input == "twice":
        ctx.send_event(OutputEvent(output="again"))


SHOUT = Agent().add_action("shout", [InputEvent], shout)


def test_from_list_apply_to_list_execute() -> None:
    env = LocalExecutionEnvironment(config=make_config())
    output = env.from_list([{"key": "a", "value": "x"}, {"value": "twice"}, {"key": "a", "value": "y"}]) \
        .apply(SHOUT).to_list()
    assert output == []  # filled by execute()
    env.execute()
    # Input order; keys default to the input's index; several outputs of one input stay together.
    assert output == [{"a": "X"}, {1: "TWICE"}, {1: "again"}, {"a": "Y"}]
    assert isinstance(env.metrics, RecordingMetrics) and env.metrics.runs == 3


def test_get_execution_environment() -> None:
    env = AgentsExecutionEnvironment.get_execution_environment(config=make_config(max_retries=1))
    assert isinstance(env, LocalExecutionEnvironment)
    assert env.get_config().max_retries == 1
    with pytest.raises(AgentPlanError, match="worker.KafkaExecutionEnvironment"):
        AgentsExecutionEnvironment.get_execution_environment(object())


def test_default_config_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTPLAN_ERROR_HANDLING_STRATEGY", "dead-letter")
    env = AgentsExecutionEnvironment.get_execution_environment()
    assert env.get_config().error_handling_strategy is ErrorHandlingStrategy.DEAD_LETTER


@pytest.mark.parametrize("bad", [{"key": "k"}, "just a value", {"val": 1}])
def test_inputs_without_value_are_rejected(bad: object) -> None:
    env = LocalExecutionEnvironment(config=make_config())
    with pytest.raises(AgentPlanError, match=r"input #1 must be a dict with 'value'"):
        env.from_list([{"value": 1}, bad])  # type: ignore[list-item]


def test_builder_order_is_enforced() -> None:
    env = LocalExecutionEnvironment(config=make_config())
    with pytest.raises(AgentPlanError, match="from_list"):
        env.apply(SHOUT)
    with pytest.raises(AgentPlanError, match="apply"):
        env.to_list()
    with pytest.raises(AgentPlanError, match="nothing to execute"):
        env.execute()


def test_execute_inside_a_running_loop_is_an_error() -> None:
    env = LocalExecutionEnvironment(config=make_config()).from_list([{"value": "a"}]).apply(SHOUT)
    output = env.to_list()

    async def main() -> None:
        with pytest.raises(AgentPlanError, match="execute_async"):
            env.execute()
        await env.execute_async()  # the async form works inside a loop

    run_async(main())
    assert output == [{0: "A"}]


def test_resources_added_to_the_environment() -> None:
    env = LocalExecutionEnvironment(config=make_config())
    text = Prompt.from_text("x")
    env.add_resource("inferred", text).add_resource("explicit", ResourceType.PROMPT, text)
    assert env.resources == {"inferred": (ResourceType.PROMPT, text), "explicit": (ResourceType.PROMPT, text)}
    with pytest.raises(AgentPlanError, match="resource type"):
        env.add_resource("what", 3.14)


def test_sentiment_agent_runs_locally(stub_llm: StubLLMServer, make_env: EnvFactory) -> None:
    env = make_env()
    env.resources["local_llm"] = env.resources.pop("llm")  # the name the seed agent expects
    records = [TextInput(id="1", text="I love it"), TextInput(id="2", text="It broke, terrible")]
    output = env.from_list([{"key": r.id, "value": r} for r in records]).apply(SentimentAnalysisAgent()).to_list()
    env.execute()
    results = [value for entry in output for value in entry.values()]
    assert all(isinstance(r, SentimentAnalysisResult) for r in results)
    assert [(r.id, r.sentiment) for r in results] == [("1", "positive"), ("2", "negative")]
    assert env.metrics.llm_requests == 2


class ClosingConnection(OpenAIChatModelConnection):
    """Records the event loops it was closed on."""

    closed: list[object] = []

    async def aclose(self) -> None:
        ClosingConnection.closed.append(asyncio.get_running_loop())
        await super().aclose()


def test_execute_closes_connections_before_its_loop_ends(stub_llm: StubLLMServer) -> None:
    ClosingConnection.closed = []
    env = LocalExecutionEnvironment(config=make_config())
    env.add_resource("local_llm", ResourceDescriptor(clazz=ClosingConnection, api_base_url=stub_llm.base_url,
                                                     api_key="test"))
    output = env.from_list([{"value": TextInput(id="1", text="great")}]).apply(SentimentAnalysisAgent()).to_list()
    env.execute()
    env.execute()
    assert len(output) == 2
    assert len(ClosingConnection.closed) == 2 and ClosingConnection.closed[0] is not ClosingConnection.closed[1]
