"""``agentfleet kb load``: fill a vector store collection from JSON lines or text files.

The store is the agent's own vector store resource (``--agent module:Class --vector-store NAME``),
built from the same descriptor the worker builds at run time: same store, same embedding model.

* ``.jsonl`` / ``.ndjson`` files: one document per line, ``{"content": ..., "id": ..., "metadata": {...}}``
  (``text`` is accepted for ``content``; ``id`` and ``metadata`` are optional).
* Any other file: text, one document per paragraph (blocks separated by blank lines), with
  ``metadata`` ``{"source": <file>, "paragraph": <n>}``.

Documents without an ``id`` get one derived from their content and metadata, so loading the same
files again replaces them instead of adding copies.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from worker.exceptions import ConfigurationError

JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def read_documents(paths: list[Path]) -> list[Any]:
    """All documents of ``paths``; a bad file or line is a one-line error naming it."""
    from agentplan.vector_stores import Document

    docs: list[Document] = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError("file", f"{path}: {exc}") from exc
        if path.suffix.lower() in JSON_LINES_SUFFIXES:
            docs.extend(_json_lines(path, text))
        else:
            for n, block in enumerate(b.strip() for b in _PARAGRAPH_BREAK.split(text)):
                if block:
                    docs.append(Document(content=block, metadata={"source": str(path), "paragraph": n}))
    return docs


def _json_lines(path: Path, text: str) -> Iterator[Any]:
    from agentplan.vector_stores import Document

    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise ConfigurationError("file", f"{where}: not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigurationError("file", f"{where}: expected a JSON object")
        content = data.get("content", data.get("text"))
        if not isinstance(content, str) or not content:
            raise ConfigurationError("file", f"{where}: needs a non-empty string 'content' (or 'text')")
        metadata = data.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise ConfigurationError("file", f"{where}: 'metadata' must be an object")
        doc_id = data.get("id")
        yield Document(content=content, metadata=metadata, id=None if doc_id is None else str(doc_id))


def open_store(agent_path: str, store_name: str, resources: dict[str, str], agent_config: Path | None) -> Any:
    """The agent's vector store resource ``store_name``, built as the worker builds it."""
    from agentplan import AgentConfiguration, AgentPlanError, ResourceType
    from agentplan.vector_stores import BaseVectorStore
    from worker.plugins import compile_plan, load_agent

    plan = compile_plan(load_agent(agent_path), AgentConfiguration.load(agent_config), resources)
    try:
        store = plan.get_resource(store_name, ResourceType.VECTOR_STORE)
    except AgentPlanError as exc:
        raise ConfigurationError("vector-store", str(exc)) from exc
    if not isinstance(store, BaseVectorStore):
        raise ConfigurationError("vector-store", f"{store_name!r} is a {type(store).__name__}, not a vector store")
    return store


def load(store: Any, collection: str, docs: list[Any], batch_size: int, advance: Callable[[int], None]) -> int:
    """Add ``docs`` to ``collection`` in batches (one embedding call each); returns the count."""
    for start in range(0, len(docs), batch_size):
        batch = docs[start:start + batch_size]
        store.add(batch, collection_name=collection)
        advance(len(batch))
    return len(docs)
