"""The seed's sentiment agent for Flink Agents 0.1.1, generated from ``examples/sentiment``.

Our example ports the seed from Flink Agents by changing imports only; this goes the other way,
so the Flink peer runs the very agent our worker runs rather than a second copy of it. Only
``from agentplan import ...`` lines change (each name to its Flink Agents module) and the example
package's own imports become top-level module imports. Stdlib only: it runs in either venv.
"""

from __future__ import annotations

import ast
from pathlib import Path

EXAMPLE_DIR = Path(__file__).resolve().parents[2] / "examples" / "sentiment"
MODULES = ("custom_types", "sentiment_agent")
EXAMPLE_PACKAGE = "examples.sentiment."

# Where Flink Agents 0.1.1 keeps each name the example imports from agentplan.
FLINK_MODULE_OF: dict[str, str] = {
    "Agent": "flink_agents.api.agent",
    "ChatMessage": "flink_agents.api.chat_message",
    "MessageRole": "flink_agents.api.chat_message",
    "action": "flink_agents.api.decorators",
    "chat_model_setup": "flink_agents.api.decorators",
    "prompt": "flink_agents.api.decorators",
    "ChatRequestEvent": "flink_agents.api.events.chat_event",
    "ChatResponseEvent": "flink_agents.api.events.chat_event",
    "InputEvent": "flink_agents.api.events.event",
    "OutputEvent": "flink_agents.api.events.event",
    "Prompt": "flink_agents.api.prompts.prompt",
    "ResourceDescriptor": "flink_agents.api.resource",
    "RunnerContext": "flink_agents.api.runner_context",
    "OpenAIChatModelConnection": "flink_agents.integrations.chat_models.openai.openai_chat_model",
    "OpenAIChatModelSetup": "flink_agents.integrations.chat_models.openai.openai_chat_model",
}


def port_source(source: str) -> str:
    """``source`` with its agentplan and example-package imports rewritten for Flink Agents."""
    lines = source.splitlines(keepends=True)
    replacements: list[tuple[int, int, list[str]]] = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom) or node.module is None:
            continue
        indent = " " * node.col_offset
        names = [alias.name + (f" as {alias.asname}" if alias.asname else "") for alias in node.names]
        if node.module == "agentplan":
            unknown = [alias.name for alias in node.names if alias.name not in FLINK_MODULE_OF]
            if unknown:
                raise ValueError(f"no Flink Agents module known for {unknown}")
            new = [f"{indent}from {FLINK_MODULE_OF[alias.name]} import {name}\n"
                   for alias, name in zip(node.names, names)]
        elif node.module.startswith(EXAMPLE_PACKAGE):
            new = [f"{indent}from {node.module[len(EXAMPLE_PACKAGE):]} import {', '.join(names)}\n"]
        else:
            continue
        replacements.append((node.lineno - 1, node.end_lineno or node.lineno, new))
    for start, end, new in sorted(replacements, reverse=True):
        lines[start:end] = new
    return "".join(lines)


def write_port(directory: Path) -> Path:
    """Write the ported modules into ``directory`` (put it on PYTHONPATH); returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    for module in MODULES:
        source = (EXAMPLE_DIR / f"{module}.py").read_text(encoding="utf-8")
        (directory / f"{module}.py").write_text(port_source(source), encoding="utf-8")
    return directory


def example_prompt_messages() -> tuple[str, str]:
    """(system, user template) of the example's sentiment prompt, read from its source.

    The prompt is ``Prompt.from_messages`` over ``ChatMessage(role=MessageRole.X, content="...")``
    literals; this finds those two literals without importing agentplan.
    """
    tree = ast.parse((EXAMPLE_DIR / "custom_types.py").read_text(encoding="utf-8"))
    contents: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ChatMessage":
            arguments = {k.arg: k.value for k in node.keywords}
            role, content = arguments.get("role"), arguments.get("content")
            if isinstance(role, ast.Attribute) and isinstance(content, ast.Constant):
                contents[role.attr] = content.value
    try:
        return contents["SYSTEM"], contents["USER"]
    except KeyError as missing:
        raise ValueError(f"no {missing} message literal in {EXAMPLE_DIR / 'custom_types.py'}") from None
