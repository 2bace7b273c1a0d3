"""Local environments with the stub's embeddings (and a Qdrant knowledge base in a tmp dir)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agentplan import (
    Agent,
    Document,
    LocalExecutionEnvironment,
    OpenAIEmbeddingModelConnection,
    OpenAIEmbeddingModelSetup,
    ResourceDescriptor,
    ResourceType,
)
from agentplan.integrations.qdrant import QdrantVectorStore
from agentplan.testing.llm_stub import StubLLMServer
from tests.agentplan.retrieval.agents import EMBEDDER, EMBEDDINGS, STORE
from tests.agentplan.support import make_config

FAQ = [
    Document(id="refund", content="you can return any item within 30 days for a refund"),
    Document(id="shipping", content="orders ship within 2 days and express orders arrive the next day"),
    Document(id="password", content="reset your password with the forgot password link"),
]

RetrievalEnv = Callable[..., LocalExecutionEnvironment]


def embedding_resources(env: LocalExecutionEnvironment, stub: StubLLMServer) -> None:
    env.add_resource(EMBEDDER, ResourceType.EMBEDDING_MODEL_CONNECTION, ResourceDescriptor(
        clazz=OpenAIEmbeddingModelConnection, base_url=stub.base_url, api_key="test", request_timeout=5.0))
    env.add_resource(EMBEDDINGS, ResourceType.EMBEDDING_MODEL, ResourceDescriptor(
        clazz=OpenAIEmbeddingModelSetup, connection=EMBEDDER, model="embed-m"))


@pytest.fixture
def retrieval_env(stub_llm: StubLLMServer, tmp_path: Path) -> RetrievalEnv:
    """``retrieval_env(**config)``: embeddings from the stub, store ``kb`` (Qdrant, local mode) holding FAQ."""
    path = str(tmp_path / "kb")
    loader = QdrantVectorStore(embedding_model=OpenAIEmbeddingModelSetup(connection=OpenAIEmbeddingModelConnection(
        base_url=stub_llm.base_url, api_key="test"), model="embed-m"), collection="faq", path=path)
    loader.add(FAQ)
    loader.close()

    def factory(**config: Any) -> LocalExecutionEnvironment:
        env = LocalExecutionEnvironment(config=make_config(**config))
        embedding_resources(env, stub_llm)
        env.add_resource(STORE, ResourceType.VECTOR_STORE, ResourceDescriptor(
            clazz=QdrantVectorStore, embedding_model=EMBEDDINGS, collection="faq", path=path))
        return env

    return factory


def run(env: LocalExecutionEnvironment, agent: Agent, inputs: list[dict[str, Any]]) -> list[Any]:
    """Outputs of one execute() (the environment keeps per-key state across calls)."""
    before = len(env.to_list()) if env._plan is not None else 0
    env.from_list(inputs).apply(agent)
    env.execute()
    return [value for entry in env.to_list()[before:] for value in entry.values()]
