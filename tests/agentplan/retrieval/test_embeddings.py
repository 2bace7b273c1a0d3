"""OpenAI-compatible embeddings against the stub's /v1/embeddings, through the real openai client."""

from __future__ import annotations

import asyncio
import base64
import socket
from array import array

import pytest

from agentplan import ChatModelError, OpenAIEmbeddingModelConnection, OpenAIEmbeddingModelSetup, TransientError
from agentplan.embedding_models import dot
from agentplan.testing.llm_stub import StubLLMServer
from agentplan.testing.stub_embeddings import hash_embedding


def setup_for(stub: StubLLMServer, **kwargs: object) -> OpenAIEmbeddingModelSetup:
    conn = OpenAIEmbeddingModelConnection(base_url=stub.base_url, api_key="test", request_timeout=5.0)
    return OpenAIEmbeddingModelSetup(connection=conn, model="embed-m", **kwargs)


def test_one_text_gives_one_vector_and_a_list_one_per_text(stub_llm: StubLLMServer) -> None:
    setup = setup_for(stub_llm)
    vector = setup.embed("kafka streams")
    assert vector == pytest.approx(hash_embedding("kafka streams"))
    assert len(vector) == 256 and dot(vector, vector) == pytest.approx(1.0)
    vectors = setup.embed(["a cat", "a dog"])
    assert vectors == [pytest.approx(hash_embedding("a cat")), pytest.approx(hash_embedding("a dog"))]
    (_single, batch) = stub_llm.embeddings.requests
    assert batch == {"model": "embed-m", "input": ["a cat", "a dog"], "status": 200}


def test_async_path_passes_dimensions(stub_llm: StubLLMServer) -> None:
    setup = setup_for(stub_llm, dimensions=16)

    async def run() -> object:
        try:
            return await setup.aembed_many(["x y", "z"])
        finally:
            await setup.connection.aclose()

    vectors = asyncio.run(run())
    assert vectors == [pytest.approx(hash_embedding("x y", 16)), pytest.approx(hash_embedding("z", 16))]


def test_shared_words_are_nearer_than_unrelated_text(stub_llm: StubLLMServer) -> None:
    query, near, far = setup_for(stub_llm).embed_many(
        ["how do I reset my password", "password reset link on the login page", "shipping takes two days"])
    assert dot(query, near) > dot(query, far)


def test_base64_response_is_decoded() -> None:
    from agentplan.integrations.openai_embedding import parse_embeddings

    values = [0.5, -0.25, 1.0]
    body = ('{"data": [{"index": 0, "embedding": "' + base64.b64encode(array("f", values).tobytes()).decode()
            + '"}]}').encode()
    assert parse_embeddings(body) == [values]
    with pytest.raises(ChatModelError, match="invalid response from the embedding server"):
        parse_embeddings(b'{"data": [{"embedding": {"no": 1}}]}')


def test_unreachable_server_is_transient_and_a_rejection_is_not(stub_llm: StubLLMServer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = OpenAIEmbeddingModelConnection(base_url=f"http://127.0.0.1:{port}/v1", api_key="t", request_timeout=2)
    with pytest.raises(TransientError, match="cannot reach"):
        dead.embed("x")
    wrong_path = OpenAIEmbeddingModelConnection(base_url=f"{stub_llm.base_url}/nope", api_key="t")
    with pytest.raises(ChatModelError, match="rejected \\(404\\)"):
        wrong_path.embed("x")


def test_held_request_waits_until_released(stub_llm: StubLLMServer) -> None:
    setup = setup_for(stub_llm)
    stub_llm.embeddings.hold("slow")

    async def run() -> object:
        task = asyncio.ensure_future(setup.aembed("a slow text"))
        for _ in range(200):  # bounded: the request reaches the gate within 2 s
            if stub_llm.embeddings.held_count() == 1:
                break
            await asyncio.sleep(0.01)
        assert stub_llm.embeddings.held_count() == 1 and not task.done()
        stub_llm.embeddings.release()
        result = await task
        await setup.connection.aclose()
        return result

    assert asyncio.run(run()) == pytest.approx(hash_embedding("a slow text"))
    assert stub_llm.embeddings.count("a slow text") == 1
