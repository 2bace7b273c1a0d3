"""``agentfleet kb load``: the agent's own store descriptor, JSON lines and text files, clear errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from agentplan.testing.llm_stub import StubLLMServer
from tests.worker.integration.rag_agents import KB_PATH_ENV
from worker.cli import app

AGENT = "tests.worker.integration.rag_agents:RagMemoryAgent"


@dataclass
class Outcome:
    returncode: int
    stderr: str


def kb_load(stub: StubLLMServer, kb_path: Path, *args: str) -> Outcome:
    """In process (the CLI's start-up is not what is tested): the environment the command reads is set for the call."""
    env = {"OPENAI_BASE_URL": stub.base_url, "OPENAI_API_KEY": "test", KB_PATH_ENV: str(kb_path)}
    result = CliRunner(env=env).invoke(app, ["kb", "load", "--agent", AGENT, *args])
    return Outcome(result.exit_code, result.stderr)


def test_loads_json_lines_and_text_and_reloading_replaces(tmp_path: Path) -> None:
    faq = tmp_path / "faq.jsonl"
    faq.write_text('{"id": "refund", "content": "refunds within 30 days", "metadata": {"topic": "orders"}}\n\n'
                   '{"text": "shipping takes two days"}\n')
    notes = tmp_path / "notes.txt"
    notes.write_text("First paragraph about passwords.\n\nSecond paragraph\nabout batteries.\n")
    kb = tmp_path / "kb"
    with StubLLMServer() as stub:
        out = kb_load(stub, kb, "--vector-store", "kb", "--batch-size", "2", "faq", str(faq), str(notes))
        assert out.returncode == 0, out.stderr
        assert "loaded 4 documents into faq (kb)" in out.stderr
        assert [len(r["input"]) for r in stub.embeddings.requests] == [2, 2]  # batches of --batch-size
        again = kb_load(stub, kb, "--vector-store", "kb", "faq", str(faq), str(notes))
        assert again.returncode == 0, again.stderr

    from agentplan.integrations.qdrant import QdrantVectorStore

    store = QdrantVectorStore(collection="faq", path=str(kb))
    try:
        docs = {d.content: d for d in store.get()}
    finally:
        store.close()
    assert len(docs) == 4  # loading again replaced, never duplicated
    assert docs["refunds within 30 days"].id == "refund"
    assert docs["refunds within 30 days"].metadata == {"topic": "orders"}
    assert docs["Second paragraph\nabout batteries."].metadata == {"source": str(notes), "paragraph": 1}


def test_bad_input_is_one_line_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"content": "fine"}\n{"id": 3}\n')
    with StubLLMServer() as stub:
        out = kb_load(stub, tmp_path / "kb", "--vector-store", "kb", "faq", str(bad))
        assert out.returncode == 2 and out.stderr.strip() == \
            f"error: file: {bad}:2: needs a non-empty string 'content' (or 'text')"
        out = kb_load(stub, tmp_path / "kb", "--vector-store", "nope", "faq", str(bad.with_name("none.txt")))
        assert out.returncode == 2 and "none.txt" in out.stderr
        good = tmp_path / "good.txt"
        good.write_text("text")
        out = kb_load(stub, tmp_path / "kb", "--vector-store", "nope", "faq", str(good))
        assert out.returncode == 2 and out.stderr.strip().startswith("error: vector-store: no vector_store resource "
                                                                     "named 'nope' (known: ['kb'])"), out.stderr
        assert stub.embeddings.requests == []
