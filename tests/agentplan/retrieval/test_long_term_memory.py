"""Long-term memory on the local runner: memory sets in the key's state, embedded through the stub."""

from __future__ import annotations

import json

import pytest

from agentplan import (
    AgentPlan,
    AgentRunError,
    LocalExecutionEnvironment,
    LongTermMemoryOptions,
    PlanCompileError,
)
from agentplan.long_term_memory import LTM_ROOT
from agentplan.testing.llm_stub import StubLLMServer
from tests.agentplan.retrieval.agents import EMBEDDINGS, MemoryOpsAgent
from tests.agentplan.retrieval.conftest import embedding_resources, run
from tests.agentplan.support import make_config


def memory_env(stub: StubLLMServer, **config: object) -> LocalExecutionEnvironment:
    env = LocalExecutionEnvironment(config=make_config())
    env.config.set(LongTermMemoryOptions.EMBEDDING_MODEL_SETUP, EMBEDDINGS)
    for key, value in config.items():
        env.config.set(key, value)
    embedding_resources(env, stub)
    return env


def ops(env: LocalExecutionEnvironment, key: str, *operations: dict[str, object]) -> list[object]:
    return run(env, MemoryOpsAgent(), [{"key": key, "value": op} for op in operations])


def test_add_get_search_delete_per_key(stub_llm: StubLLMServer) -> None:
    env = memory_env(stub_llm)
    ids, _ = ops(env, "ana", {"op": "add", "items": ["my dog is called Pixel", "I am allergic to peanuts"],
                              "meta": {"kind": "fact"}},
                 {"op": "add", "items": "I like jazz", "meta": {"kind": "taste"}})
    assert len(ids) == 2 and len(set(ids)) == 2  # type: ignore[arg-type]
    assert env.metrics.llm_requests == 2  # type: ignore[attr-defined] # one embedding call per add
    ops(env, "ben", {"op": "add", "items": "I work night shifts"})
    assert ops(env, "ana", {"op": "get"}) == [["my dog is called Pixel", "I am allergic to peanuts", "I like jazz"]]
    assert ops(env, "ana", {"op": "get", "filters": {"kind": "taste"}}) == [["I like jazz"]]
    assert ops(env, "ana", {"op": "get", "limit": 1}) == [["I like jazz"]]  # the most recent
    assert ops(env, "ana", {"op": "get", "ids": ids}) == [["my dog is called Pixel", "I am allergic to peanuts"]]
    ((best, score), _second), = ops(env, "ana", {"op": "search", "query": "what is my dog called"})
    assert best == "my dog is called Pixel" and 0 < score <= 1
    assert ops(env, "ana", {"op": "search", "query": "dog", "filters": {"kind": "taste"}}) == [[("I like jazz", 0.0)]]
    assert ops(env, "ana", {"op": "search_sync", "query": "peanuts allergy", "limit": 1}) == [
        ["I am allergic to peanuts"]]
    assert ops(env, "ben", {"op": "get"}) == [["I work night shifts"]]  # keys do not share memory
    assert ops(env, "ana", {"op": "delete", "ids": [ids[0]]}, {"op": "delete"}) == [2, 0]  # type: ignore[index]
    assert ops(env, "ana", {"op": "search", "query": "dog"}) == [[]]
    assert ops(env, "ben", {"op": "drop", "set": "notes"}, {"op": "get"}) == [True, []]


def test_items_are_upstream_shaped_and_kept_in_the_key_state(stub_llm: StubLLMServer) -> None:
    env = memory_env(stub_llm)
    ops(env, "ana", {"op": "add_sync", "items": ["one fact"]})
    (items,) = ops(env, "ana", {"op": "items"})
    (item,) = items  # type: ignore[misc]
    assert item["memory_set_name"] == "notes" and item["value"] == "one fact"
    assert item["created_at"] == item["updated_at"] and item["additional_metadata"] is None
    state = json.loads(env.state["ana"])
    assert LTM_ROOT in state["m"]["o"]  # in the memory the engine persists (and the worker changelogs)


def test_each_set_is_bounded_and_evicts_the_oldest(stub_llm: StubLLMServer) -> None:
    env = memory_env(stub_llm, **{LongTermMemoryOptions.MAX_ITEMS_PER_SET: 3})
    ops(env, "k", {"op": "add", "items": ["a1", "a2"]}, {"op": "add", "items": ["a3", "a4"]},
        {"op": "add", "items": "a5"})
    assert ops(env, "k", {"op": "get"}) == [["a3", "a4", "a5"]]


def test_a_failed_action_leaves_no_memory(stub_llm: StubLLMServer) -> None:
    env = memory_env(stub_llm)
    env.config.error_handling_strategy = "dead-letter"  # type: ignore[assignment]
    ops(env, "k", {"op": "add", "items": "written then rolled back", "fail_after": True})
    assert len(env.dead_letters) == 1
    assert ops(env, "k", {"op": "get"}) == [[]]


def test_upstream_mem0_key_and_yaml_nesting_are_read(stub_llm: StubLLMServer, tmp_path: object) -> None:
    from pathlib import Path

    from agentplan import AgentConfiguration
    from agentplan.long_term_memory import embedding_setup_name, max_items_per_set

    path = Path(str(tmp_path)) / "agent.yaml"
    path.write_text("long-term-memory:\n  mem0:\n    embedding-model-setup: emb\n  max-items-per-set: 7\n")
    config = AgentConfiguration.load(path, env={})
    assert embedding_setup_name(config) == "emb" and max_items_per_set(config) == 7


def test_misconfiguration_fails_at_compile_or_first_use(stub_llm: StubLLMServer) -> None:
    env = memory_env(stub_llm)
    env.config.set(LongTermMemoryOptions.EMBEDDING_MODEL_SETUP, "nope")
    with pytest.raises(PlanCompileError, match="long-term-memory.embedding-model-setup names 'nope'"):
        AgentPlan.from_agent(MemoryOpsAgent(), env.config, env.resources)
    env.config.set(LongTermMemoryOptions.EMBEDDING_MODEL_SETUP, EMBEDDINGS)
    env.config.set(LongTermMemoryOptions.MAX_ITEMS_PER_SET, 0)
    with pytest.raises(PlanCompileError, match="max-items-per-set must be a positive integer"):
        AgentPlan.from_agent(MemoryOpsAgent(), env.config, env.resources)

    unconfigured = LocalExecutionEnvironment(config=make_config())
    embedding_resources(unconfigured, stub_llm)
    with pytest.raises(AgentRunError, match="long-term memory needs an embedding model"):
        ops(unconfigured, "k", {"op": "add", "items": "x"})
    with pytest.raises(AgentRunError, match="without dots"):
        ops(memory_env(stub_llm), "k", {"op": "get", "set": "a.b"})
