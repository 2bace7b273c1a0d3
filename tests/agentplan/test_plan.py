"""AgentPlan: compiling agents, compile errors, JSON round trip, secret redaction."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentplan import (
    Agent,
    AgentPlan,
    ChatResponseEvent,
    Engine,
    Event,
    InputEvent,
    OpenAIChatModelConnection,
    OpenAIChatModelSetup,
    OutputEvent,
    PlanCompileError,
    Prompt,
    ResourceDescriptor,
    ResourceError,
    ResourceType,
    RunnerContext,
    action,
    chat_model_connection,
    chat_model_setup,
    prompt,
    tool,
)
from agentplan.exceptions import SerializationError
from agentplan.testing.llm_stub import StubLLMServer
from examples.sentiment.custom_types import SentimentAnalysisResult, TextInput, sentiment_analysis_prompt
from examples.sentiment.sentiment_agent import SentimentAnalysisAgent
from tests.agentplan.support import make_config, run_async, stub_connection

SECRET = "sk-very-secret-123"


def sentiment_plan(connection: ResourceDescriptor, **config: Any) -> AgentPlan:
    return AgentPlan.from_agent(SentimentAnalysisAgent(), make_config(**config),
                                {"local_llm": (ResourceType.CHAT_MODEL_CONNECTION, connection)})


def local_connection(**extra: Any) -> ResourceDescriptor:
    return ResourceDescriptor(clazz=OpenAIChatModelConnection, api_base_url="http://127.0.0.1:9/v1",
                              api_key=SECRET, **extra)


def noop(event: Event, ctx: RunnerContext) -> None:
    return None


def test_compile_sentiment_agent() -> None:
    plan = sentiment_plan(local_connection())
    assert list(plan.actions) == ["process_input", "process_chat_response", "chat_model_action",
                                  "tool_call_action", "context_retrieval_action"]
    assert [a.name for a in plan.actions_for(InputEvent)] == ["process_input"]
    assert [a.name for a in plan.actions_for(ChatResponseEvent)] == ["process_chat_response"]
    assert [a.name for a in plan.actions_for(OutputEvent)] == []
    kinds = {name: kind for name, (kind, _) in plan.resource_providers.items()}
    assert kinds == {"sentiment_prompt": ResourceType.PROMPT, "sentiment_model": ResourceType.CHAT_MODEL,
                     "local_llm": ResourceType.CHAT_MODEL_CONNECTION}
    assert plan.get_resource("sentiment_prompt", ResourceType.PROMPT) is sentiment_analysis_prompt
    setup = plan.get_resource("sentiment_model", ResourceType.CHAT_MODEL)
    assert isinstance(setup, OpenAIChatModelSetup)
    assert setup.prompt is sentiment_analysis_prompt
    assert isinstance(setup.connection, OpenAIChatModelConnection)
    assert setup.connection is plan.get_resource("local_llm", ResourceType.CHAT_MODEL_CONNECTION)  # cached
    with pytest.raises(ResourceError, match="no prompt resource named 'sentiment_model'"):
        plan.get_resource("sentiment_model", ResourceType.PROMPT)


def test_json_round_trip_keeps_actions_resources_and_config() -> None:
    plan = sentiment_plan(local_connection(timeout=12.5), max_retries=7)
    text = plan.model_dump_json(indent=2)
    again = AgentPlan.model_validate_json(text)

    assert list(again.actions) == list(plan.actions)
    for name, spec in plan.actions.items():
        other = again.actions[name]
        assert other.events == spec.events
        assert other.func is spec.func
        assert other.config == spec.config
    assert again.resource_providers.keys() == plan.resource_providers.keys()
    for name, (kind, provider) in plan.resource_providers.items():
        other_kind, other = again.resource_providers[name]
        assert other_kind is kind
        if isinstance(provider, ResourceDescriptor):
            assert other.clazz is provider.clazz
            assert other.arguments == provider.arguments
        else:
            assert other == provider
    assert again.config == plan.config
    assert again.config.max_retries == 7
    assert json.loads(again.model_dump_json()) == json.loads(text)  # a fixed point


def test_round_tripped_plan_runs(stub_llm: StubLLMServer) -> None:
    plan = AgentPlan.model_validate_json(sentiment_plan(stub_connection(stub_llm)).model_dump_json())

    async def main() -> list[Any]:
        engine = Engine(plan)
        engine.submit("1", TextInput(id="1", text="I love this product!"), position=0, meta="m")
        await engine.wait_idle()
        await plan.aclose()
        return [output for delta in engine.collect() for output in delta.outputs]

    outputs = run_async(main())
    assert len(outputs) == 1
    meta, result = outputs[0]
    assert meta == "m"
    assert isinstance(result, SentimentAnalysisResult)
    assert result.id == "1" and result.sentiment == "positive"


def test_redact_secrets_hides_api_key() -> None:
    plan = sentiment_plan(local_connection(default_headers={"Authorization": f"Bearer {SECRET}",
                                                            "X-Trace": "visible"}))
    assert SECRET in plan.model_dump_json()
    redacted = plan.model_dump_json(redact_secrets=True)
    assert SECRET not in redacted
    data = json.loads(redacted)
    connection = next(r for r in data["resources"] if r["name"] == "local_llm")
    arguments = connection["descriptor"]["arguments"]
    assert arguments["api_key"] == "***"
    assert arguments["default_headers"] == {"Authorization": "***", "X-Trace": "visible"}
    assert arguments["api_base_url"] == "http://127.0.0.1:9/v1"
    assert "sk-very" not in repr(plan.get_resource("local_llm", ResourceType.CHAT_MODEL_CONNECTION))


def test_redact_secrets_hides_credentials_in_urls() -> None:
    plan = sentiment_plan(ResourceDescriptor(clazz=OpenAIChatModelConnection, api_key=SECRET,
                                             api_base_url=f"https://svc:{SECRET}@llm.example/v1"))
    data = json.loads(plan.model_dump_json(redact_secrets=True))
    connection = next(r for r in data["resources"] if r["name"] == "local_llm")
    assert connection["descriptor"]["arguments"]["api_base_url"] == "https://***@llm.example/v1"


# -- compile errors ----------------------------------------------------------------------------


class OneAction(Agent):
    @action(InputEvent)
    @staticmethod
    def start(event: InputEvent, ctx: RunnerContext) -> None:
        return None


def test_duplicate_action_name() -> None:
    agent = OneAction()
    with pytest.raises(PlanCompileError, match="duplicate action name 'start'"):
        agent.add_action("start", [InputEvent], noop)
    agent.add_action("other", [InputEvent], noop)
    with pytest.raises(PlanCompileError, match="duplicate action name 'other'"):
        agent.add_action("other", [OutputEvent], noop)


def test_builtin_action_names_are_reserved() -> None:
    agent = Agent().add_action("chat_model_action", [InputEvent], noop)
    with pytest.raises(PlanCompileError, match="reserved"):
        AgentPlan.from_agent(agent)


def test_duplicate_resource_name_agent_vs_environment() -> None:
    with pytest.raises(PlanCompileError, match="duplicate resource name 'sentiment_prompt'.*environment"):
        AgentPlan.from_agent(SentimentAnalysisAgent(), make_config(), {
            "local_llm": (ResourceType.CHAT_MODEL_CONNECTION, local_connection()),
            "sentiment_prompt": (ResourceType.PROMPT, Prompt.from_text("x")),
        })


def test_duplicate_resource_name_on_agent_and_environment_builders() -> None:
    agent = SentimentAnalysisAgent()
    with pytest.raises(PlanCompileError, match="duplicate resource name 'sentiment_model'"):
        agent.add_resource("sentiment_model", Prompt.from_text("x"))
    agent.add_resource("extra_prompt", Prompt.from_text("x"))
    with pytest.raises(PlanCompileError, match="duplicate resource name 'extra_prompt'"):
        agent.add_resource("extra_prompt", ResourceType.PROMPT, Prompt.from_text("y"))

    from agentplan import LocalExecutionEnvironment

    env = LocalExecutionEnvironment(config=make_config())
    env.add_resource("local_llm", local_connection())
    with pytest.raises(PlanCompileError, match="duplicate resource name 'local_llm'"):
        env.add_resource("local_llm", local_connection())
    env.add_resource("sentiment_prompt", Prompt.from_text("clash"))
    with pytest.raises(PlanCompileError, match="duplicate resource name 'sentiment_prompt'"):
        env.compile(SentimentAnalysisAgent())


def test_action_without_event_type() -> None:
    with pytest.raises(PlanCompileError, match="at least one event type"):
        action()
    with pytest.raises(PlanCompileError, match="Event subclasses"):
        action(str)  # type: ignore[arg-type]
    with pytest.raises(PlanCompileError, match="no event type"):
        Agent().add_action("empty", [], noop)


def test_action_must_be_static() -> None:
    class NotStatic(Agent):
        @action(InputEvent)
        def start(self, event: InputEvent, ctx: RunnerContext) -> None:  # type: ignore[misc]
            return None

    with pytest.raises(PlanCompileError, match="must be a @staticmethod"):
        AgentPlan.from_agent(NotStatic())


def setup_agent(**setup_args: Any) -> Agent:
    """An agent with a connection, a prompt, a tool and one setup built from ``setup_args``."""

    class WithSetup(Agent):
        @chat_model_connection
        @staticmethod
        def conn() -> ResourceDescriptor:
            return local_connection()

        @prompt
        @staticmethod
        def the_prompt() -> Prompt:
            return Prompt.from_text("{input}")

        @tool
        @staticmethod
        def a_tool(x: int) -> int:
            """Identity."""
            return x

        @chat_model_setup
        @staticmethod
        def model() -> ResourceDescriptor:
            return ResourceDescriptor(clazz=OpenAIChatModelSetup, **setup_args)

    return WithSetup()


def test_complete_setup_compiles() -> None:
    plan = AgentPlan.from_agent(setup_agent(connection="conn", prompt="the_prompt", tools=["a_tool"]))
    setup = plan.get_resource("model", ResourceType.CHAT_MODEL)
    assert [t.name for t in setup.tools()] == ["a_tool"]


@pytest.mark.parametrize(
    "setup_args, message",
    [
        ({"connection": "missing_conn"}, "names connection 'missing_conn', which is not a declared "
                                         "chat_model_connection"),
        ({"connection": "the_prompt"}, "names connection 'the_prompt'"),
        ({"connection": "conn", "prompt": "missing_prompt"}, "names prompt 'missing_prompt'"),
        ({"connection": "conn", "tools": ["a_tool", "missing_tool"]}, "names tool 'missing_tool'"),
        ({"prompt": "the_prompt"}, "has no 'connection'"),
    ],
    ids=["missing-connection", "wrong-kind", "missing-prompt", "missing-tool", "no-connection"],
)
def test_setup_references_are_checked_at_compile(setup_args: dict[str, Any], message: str) -> None:
    with pytest.raises(PlanCompileError, match=message):
        AgentPlan.from_agent(setup_agent(**setup_args))


def test_descriptor_class_must_match_the_declared_kind() -> None:
    agent = Agent().add_resource("conn", ResourceType.CHAT_MODEL_CONNECTION,
                                 ResourceDescriptor(clazz=OpenAIChatModelSetup, connection="x"))
    with pytest.raises(PlanCompileError, match="built from a chat_model class"):
        AgentPlan.from_agent(agent)
    bad_path = Agent().add_resource("conn", ResourceType.CHAT_MODEL_CONNECTION,
                                    ResourceDescriptor(clazz="no.such.module:Nope"))
    with pytest.raises(PlanCompileError, match="cannot import"):
        AgentPlan.from_agent(bad_path)


def test_wrong_resource_values() -> None:
    with pytest.raises(PlanCompileError, match="must be a Prompt"):
        AgentPlan.from_agent(Agent().add_resource("p", ResourceType.PROMPT, "just text"))
    with pytest.raises(PlanCompileError, match="cannot tell the resource type"):
        Agent().add_resource("x", 42)


def test_local_functions_make_the_plan_unserializable() -> None:
    def local_action(event: InputEvent, ctx: RunnerContext) -> None:
        return None

    plan = AgentPlan.from_agent(Agent().add_action("local", [InputEvent], local_action))
    with pytest.raises(SerializationError, match="define it at module level"):
        plan.model_dump_json()


def test_instance_resources_make_the_plan_unserializable() -> None:
    agent = Agent().add_resource("conn", OpenAIChatModelConnection(api_key="k"))
    plan = AgentPlan.from_agent(agent)
    assert plan.get_resource("conn", ResourceType.CHAT_MODEL_CONNECTION).api_key == "k"
    with pytest.raises(SerializationError, match="ResourceDescriptor"):
        plan.model_dump_json()


def test_actions_for_matches_event_subclasses() -> None:
    class Special(InputEvent):
        pass

    plan = AgentPlan.from_agent(OneAction())
    assert [a.name for a in plan.actions_for(Special)] == ["start"]
