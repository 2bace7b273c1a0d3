"""The package root: the documented public names, and no dependency on Kafka or the worker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import agentplan

REPO_ROOT = Path(__file__).resolve().parents[2]

# The first table of design/AGENT_API.md: every name importable from the package root.
DOCUMENTED = [
    "Agent", "action", "prompt", "chat_model_connection", "chat_model_setup", "tool", "Event", "InputEvent",
    "OutputEvent", "ChatRequestEvent", "ChatResponseEvent", "ToolRequestEvent", "ToolResponseEvent",
    "RunnerContext", "MemoryObject", "ChatMessage", "MessageRole", "Prompt", "ResourceDescriptor",
    "ResourceType", "ReActAgent", "AgentsExecutionEnvironment", "AgentPlan", "AgentConfiguration",
    "OpenAIChatModelConnection", "OpenAIChatModelSetup",
]


def test_documented_names_are_exported() -> None:
    for name in DOCUMENTED:
        assert hasattr(agentplan, name), name
    assert set(agentplan.__all__) <= set(dir(agentplan))


def test_agentplan_imports_nothing_from_kafka_or_the_worker() -> None:
    script = """
import importlib, json, pkgutil, sys
import agentplan
for info in pkgutil.walk_packages(agentplan.__path__, "agentplan."):
    importlib.import_module(info.name)
import examples.sentiment.sentiment_agent, examples.react_review.review_agent
print(json.dumps(sorted(sys.modules)))
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    modules = json.loads(proc.stdout)
    assert "agentplan.runtime.engine" in modules and "agentplan.testing.llm_stub" in modules
    forbidden = [m for m in modules if m.split(".")[0] in ("confluent_kafka", "rocksdict", "worker")]
    assert forbidden == []
