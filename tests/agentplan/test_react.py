"""ReActAgent: prompt -> model with tools -> structured output, against the stub."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentplan import (
    AgentPlan,
    OpenAIChatModelSetup,
    PlanCompileError,
    Prompt,
    ReActAgent,
    ResourceDescriptor,
    ResourceType,
)
from agentplan.testing.llm_stub import StubLLMServer
from examples.react_review.review_agent import ReviewDecision, ReviewRequest, assess_product, build_agent
from tests.agentplan.conftest import EnvFactory
from tests.agentplan.support import CONNECTION, make_config


def setup(**kwargs: Any) -> ResourceDescriptor:
    return ResourceDescriptor(clazz=OpenAIChatModelSetup, connection=CONNECTION, model="m", **kwargs)


def run(env: Any, agent: ReActAgent, *values: Any) -> list[Any]:
    output = env.from_list([{"key": i, "value": v} for i, v in enumerate(values)]).apply(agent).to_list()
    env.execute()
    return [value for entry in output for value in entry.values()]


def test_tool_then_structured_output(stub_llm: StubLLMServer, make_env: EnvFactory) -> None:
    question = 'KB-101 for 100? [[tool:assess_product {"sku": "KB-101", "budget": 100}]]'
    request = ReviewRequest(id="r1", question=question)
    (decision,) = run(make_env(), build_agent(CONNECTION), request)
    assert isinstance(decision, ReviewDecision)
    assert decision == ReviewDecision.model_validate(assess_product("KB-101", 100.0))
    first, second = stub_llm.requests
    # The prompt's {question} placeholder was filled from the input's fields; the schema was requested
    # in a system message after the prompt's own.
    assert [m["role"] for m in first["messages"]] == ["system", "system", "user"]
    assert first["messages"][2] == {"role": "user", "content": request.question}
    assert "JSON schema" in first["messages"][1]["content"]
    assert [t["function"]["name"] for t in first["tools"]] == ["assess_product"]
    assert second["messages"][-1]["role"] == "tool"


def test_without_prompt_the_input_is_the_message(stub_llm: StubLLMServer, make_env: EnvFactory) -> None:
    results = run(make_env(), ReActAgent(chat_model=setup()), "plain text", {"a": 1})
    assert results == ["echo: plain text", 'echo: {"a": 1}']  # no schema: the answer's text
    assert stub_llm.requests[0]["messages"] == [{"role": "user", "content": "plain text"}]


def test_prompt_given_to_the_setup(stub_llm: StubLLMServer, make_env: EnvFactory) -> None:
    """The setup's prompt is its system message, filled from the input like ReAct's own prompt."""
    env = make_env()
    env.add_resource("p", Prompt.from_text("Item {name} costs {price}; input={input}"))
    (answer,) = run(env, ReActAgent(chat_model=setup(prompt="p")), {"name": "pen", "price": 2})
    assert answer == 'echo: {"name": "pen", "price": 2}'
    assert stub_llm.requests[0]["messages"] == [
        {"role": "system", "content": 'Item pen costs 2; input={"name": "pen", "price": 2}'},
        {"role": "user", "content": '{"name": "pen", "price": 2}'}]


def test_prompt_variables_are_upstreams(stub_llm: StubLLMServer, make_env: EnvFactory) -> None:
    """Fields are filled as ``str(value)`` (Flink Agents' conversion); ``{input}`` is the input as JSON."""
    prompt = Prompt.from_text("{tags} | {flag} | {input}")
    (answer,) = run(make_env(), ReActAgent(chat_model=setup(), prompt=prompt), {"tags": ["a", "b"], "flag": True})
    assert answer == """echo: ['a', 'b'] | True | {"tags": ["a", "b"], "flag": true}"""
    (answer,) = run(make_env(), ReActAgent(chat_model=setup(), prompt=prompt), True)
    assert answer == "echo: {tags} | {flag} | True"


def test_dict_output_schema(make_env: EnvFactory) -> None:
    agent = ReActAgent(chat_model=setup(), output_schema={"type": "object"})
    (answer,) = run(make_env(), agent, '[[json {"ok": true}]]')
    assert answer == {"ok": True}


def test_construction_errors() -> None:
    with pytest.raises(PlanCompileError, match="ResourceDescriptor"):
        ReActAgent(chat_model="react_chat_model")  # type: ignore[arg-type]


def test_plan_round_trip_keeps_the_output_schema() -> None:
    plan = AgentPlan.from_agent(build_agent("conn"), make_config(), {
        "conn": (ResourceType.CHAT_MODEL_CONNECTION,
                 ResourceDescriptor(clazz="agentplan.integrations.openai:OpenAIChatModelConnection", api_key="k"))})
    again = AgentPlan.model_validate_json(plan.model_dump_json())
    assert again.actions["react_start"].config == {"output_schema": ReviewDecision, "has_prompt": True}
    assert again.get_resource("assess_product", ResourceType.TOOL).func is assess_product
    assert again.get_resource("react_prompt", ResourceType.PROMPT) == plan.get_resource("react_prompt",
                                                                                        ResourceType.PROMPT)
    assert json.loads(again.model_dump_json()) == json.loads(plan.model_dump_json())
