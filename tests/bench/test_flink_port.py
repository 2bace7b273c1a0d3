"""The Flink Agents peer runs our example, ported back by rewriting imports only."""

from __future__ import annotations

import ast

import pytest

from bench.peers import flink_port


def imported_modules(source: str) -> set[str]:
    return {node.module for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom) and node.module}


def without_imports(source: str) -> list[str]:
    tree = ast.parse(source)
    import_lines = {line for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                    for line in range(node.lineno, (node.end_lineno or node.lineno) + 1)}
    return [line for number, line in enumerate(source.splitlines(), start=1) if number not in import_lines]


@pytest.mark.parametrize("module", flink_port.MODULES)
def test_port_changes_imports_only_and_leaves_no_agentplan(module: str):
    original = (flink_port.EXAMPLE_DIR / f"{module}.py").read_text(encoding="utf-8")
    ported = flink_port.port_source(original)
    modules = imported_modules(ported)
    assert not any(m == "agentplan" or m.startswith(("agentplan.", "examples.")) for m in modules), modules
    assert any(m.startswith("flink_agents.") for m in modules)
    assert without_imports(ported) == without_imports(original)


def test_every_name_keeps_its_import():
    original = (flink_port.EXAMPLE_DIR / "sentiment_agent.py").read_text(encoding="utf-8")

    def names(source: str) -> set[str]:
        return {a.asname or a.name for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)
                for a in node.names}

    assert names(flink_port.port_source(original)) == names(original)


def test_a_name_flink_agents_lacks_fails_loudly():
    with pytest.raises(ValueError, match="ReActAgent"):
        flink_port.port_source("from agentplan import Agent, ReActAgent\n")


def test_peers_send_the_prompt_our_example_agent_sends():
    from agentplan import MessageRole
    from bench.peers import peer_common
    from examples.sentiment.custom_types import sentiment_analysis_prompt

    messages = sentiment_analysis_prompt.format_messages(input="great phone")
    sent = peer_common.sentiment_messages("great phone")
    assert [(m.role, m.content) for m in messages] == [(MessageRole.SYSTEM, sent[0]["content"]),
                                                       (MessageRole.USER, sent[1]["content"])]
