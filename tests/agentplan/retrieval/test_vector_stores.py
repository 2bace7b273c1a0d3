"""Chroma (embedded in a tmp dir, and a real Chroma server over HTTP) and Qdrant (local mode on disk)
behind one BaseVectorStore API, embedding with the stub's /v1/embeddings over HTTP."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentplan import (
    BaseVectorStore,
    Document,
    OpenAIEmbeddingModelConnection,
    OpenAIEmbeddingModelSetup,
    ResourceError,
    TransientError,
    VectorStoreQuery,
)
from agentplan.integrations.chroma import ChromaVectorStore
from agentplan.integrations.qdrant import QdrantVectorStore
from agentplan.testing.llm_stub import StubLLMServer

FAQ = [
    Document(id="refund", content="you can return any item within 30 days for a refund", metadata={"topic": "orders"}),
    Document(id="shipping", content="orders ship within 2 days express next day", metadata={"topic": "orders"}),
    Document(id="password", content="reset your password with the forgot password link", metadata={"topic": "account"}),
]

StoreFactory = Callable[[], BaseVectorStore]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """``chroma run`` (the server shipped with chromadb) on 127.0.0.1; yields its port."""
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "chroma"), "run", "--path",
                               str(tmp_path_factory.mktemp("chroma-server")), "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:  # bounded by the deadline
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "chroma server did not start"
                time.sleep(0.1)
        yield port
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


@pytest.fixture(params=["chroma", "chroma-server", "qdrant"])
def open_store(request: pytest.FixtureRequest, stub_llm: StubLLMServer, tmp_path: Path) -> Iterator[StoreFactory]:
    """Opens the store on the same directory each call (a reopened store must see what was added)."""
    setup = OpenAIEmbeddingModelSetup(connection=OpenAIEmbeddingModelConnection(
        base_url=stub_llm.base_url, api_key="test", request_timeout=5.0), model="embed-m")
    opened: list[BaseVectorStore] = []

    def make() -> BaseVectorStore:
        for store in opened:
            store.close()  # Qdrant's local mode allows one client per directory
        if request.param == "chroma":
            store: BaseVectorStore = ChromaVectorStore(embedding_model=setup, collection="faq",
                                                       persist_directory=str(tmp_path / "chroma"))
        elif request.param == "chroma-server":
            store = ChromaVectorStore(embedding_model=setup, collection=f"faq-{tmp_path.name[-20:]}",
                                      host="127.0.0.1", port=request.getfixturevalue("chroma_server"))
        else:
            store = QdrantVectorStore(embedding_model=setup, collection="faq", path=str(tmp_path / "qdrant"))
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def test_add_query_get_update_delete(open_store: StoreFactory, stub_llm: StubLLMServer) -> None:
    store = open_store()
    assert store.add(FAQ) == ["refund", "shipping", "password"]
    assert len(stub_llm.embeddings.requests) == 1  # one call for the batch

    found = store.query(VectorStoreQuery(query_text="how do I reset my password", limit=2)).documents
    assert len(found) == 2 and found[0].id == "password"
    assert found[0].content == FAQ[2].content and found[0].metadata == {"topic": "account"}
    assert found[0].score is not None and found[0].score > (found[1].score or 0) and found[0].embedding is None

    assert {d.id for d in store.get(filters={"topic": "orders"})} == {"refund", "shipping"}
    assert [d.content for d in store.get(ids="shipping")] == [FAQ[1].content]

    store.update(Document(id="shipping", content="orders ship the same day", metadata={"topic": "orders"}))
    assert [d.content for d in store.get(ids=["shipping"])] == ["orders ship the same day"]

    store.delete(ids="refund")
    assert sorted(d.id or "" for d in store.get()) == ["password", "shipping"]
    store.delete(filters={"topic": "account"})
    assert [d.id for d in store.get()] == ["shipping"]
    store.delete()
    assert store.get() == []


def test_documents_persist_and_reloading_replaces(open_store: StoreFactory) -> None:
    open_store().add([Document(content="a text without id"), *FAQ])
    reopened = open_store()
    assert len(reopened.get()) == 4
    reopened.add([Document(content="a text without id")])  # same content: same derived id, no copy
    assert len(reopened.get()) == 4


def test_collections_and_async_query(open_store: StoreFactory) -> None:
    store = open_store()
    assert store.query(VectorStoreQuery(query_text="anything", collection_name="missing")).documents == []
    store.create_collection_if_not_exists("other")
    store.add(FAQ[:1], collection_name="other")
    result = asyncio.run(store.aquery(VectorStoreQuery(query_text="refund", collection_name="other", limit=5)))
    assert [d.id for d in result.documents] == ["refund"]
    store.delete_collection("other")
    assert store.get(collection_name="other") == []


def test_no_embedding_model_or_collection_is_a_clear_error(tmp_path: Path) -> None:
    store = QdrantVectorStore(path=str(tmp_path / "q"))
    with pytest.raises(ResourceError, match="no collection given"):
        store.get()
    with pytest.raises(ResourceError, match="has no embedding_model"):
        store.add([Document(content="x")], collection_name="c")
    store.close()



@pytest.mark.parametrize("kind", ["qdrant", "chroma"])
def test_an_unreachable_server_is_a_transient_error(kind: str) -> None:
    """The engine retries it (like a model outage) instead of failing the run."""
    port = free_port()  # closed again: nothing listens there
    store: BaseVectorStore = QdrantVectorStore(url=f"http://127.0.0.1:{port}", collection="faq", timeout=2) \
        if kind == "qdrant" else ChromaVectorStore(host="127.0.0.1", port=port, collection="faq")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # qdrant-client warns that it cannot check the server's version
        with pytest.raises(TransientError, match="vector store unreachable: .*Connection refused"):
            store._search(VectorStoreQuery(query_text="x"), [0.1, 0.2])
