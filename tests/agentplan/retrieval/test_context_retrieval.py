"""The built-in context retrieval action on the local runner: nearest documents, one durable query."""

from __future__ import annotations

import pytest

from agentplan import (
    AgentPlan,
    ContextRetrievalRequestEvent,
    ContextRetrievalResponseEvent,
    ErrorHandlingStrategy,
    PlanCompileError,
    ResourceDescriptor,
    ResourceType,
)
from agentplan.integrations.qdrant import QdrantVectorStore
from agentplan.plan.actions import CONTEXT_RETRIEVAL_ACTION
from agentplan.testing.llm_stub import StubLLMServer
from tests.agentplan.retrieval.agents import RetrievalAgent
from tests.agentplan.retrieval.conftest import RetrievalEnv, run


def test_events_carry_upstream_types_and_fields() -> None:
    assert ContextRetrievalRequestEvent.EVENT_TYPE == "_context_retrieval_request_event"
    assert ContextRetrievalResponseEvent.EVENT_TYPE == "_context_retrieval_response_event"
    assert ContextRetrievalRequestEvent(query="q", vector_store="kb").max_results == 3


def test_questions_get_their_nearest_documents(retrieval_env: RetrievalEnv, stub_llm: StubLLMServer) -> None:
    env = retrieval_env()
    outputs = run(env, RetrievalAgent(), [{"key": "a", "value": "how do I reset my password"},
                                          {"key": "b", "value": "when do express orders arrive"}])
    assert {o["query"]: o["ids"][0] for o in outputs} == {"how do I reset my password": "password",
                                                          "when do express orders arrive": "shipping"}
    assert all(len(o["ids"]) == 2 for o in outputs)
    assert env.metrics.actions[CONTEXT_RETRIEVAL_ACTION] == 2  # type: ignore[attr-defined]
    assert env.metrics.llm_requests == 2  # type: ignore[attr-defined] # the embedding calls are model requests
    assert stub_llm.embeddings.count("how do I reset my password") == 1


def test_a_later_failure_does_not_repeat_the_recorded_query(retrieval_env: RetrievalEnv, stub_llm: StubLLMServer
                                                            ) -> None:
    env = retrieval_env(error_handling_strategy=ErrorHandlingStrategy.RETRY, max_retries=2)
    RetrievalAgent.fail_once.add("a refund within 30 days")
    outputs = run(env, RetrievalAgent(), [{"key": "a", "value": "a refund within 30 days"}])
    assert RetrievalAgent.fail_once == set()  # the answer action did fail once
    assert outputs[0]["ids"][0] == "refund"
    # The retried action got the documents from the run's pending event: the query ran once.
    assert stub_llm.embeddings.count("a refund within 30 days") == 1


def test_store_naming_an_undeclared_embedding_model_fails_at_compile(tmp_path: object) -> None:
    from agentplan import Agent

    agent = Agent()
    agent.add_resource("kb", ResourceType.VECTOR_STORE, ResourceDescriptor(
        clazz=QdrantVectorStore, embedding_model="missing", collection="faq"))
    with pytest.raises(PlanCompileError, match="vector_store 'kb' names embedding_model 'missing', which is not"):
        AgentPlan.from_agent(agent)
    wrong_kind = Agent()
    wrong_kind.add_resource("kb", ResourceType.EMBEDDING_MODEL, ResourceDescriptor(clazz=QdrantVectorStore))
    with pytest.raises(PlanCompileError, match="embedding_model 'kb' is built from a vector_store class"):
        AgentPlan.from_agent(wrong_kind)


def test_a_second_execute_reopens_the_embedded_store(retrieval_env: RetrievalEnv) -> None:
    """Qdrant's local mode locks its directory: the runner closes stores after each execute()."""
    env = retrieval_env()
    assert run(env, RetrievalAgent(), [{"key": "a", "value": "reset my password"}])[0]["ids"][0] == "password"
    assert run(env, RetrievalAgent(), [{"key": "a", "value": "a refund please"}])[0]["ids"][0] == "refund"
