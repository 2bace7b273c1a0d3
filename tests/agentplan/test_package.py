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


def test_importing_agentplan_pulls_in_no_http_or_model_sdk() -> None:
    """The openai integration loads on first use of its names: a plain ``import agentplan`` (the
    worker's CLI, plan tools, agents on other providers) costs neither openai nor an HTTP stack."""
    script = """
import json, sys
import agentplan
before = sorted(sys.modules)
agentplan.OpenAIChatModelConnection  # the lazy name still works
print(json.dumps([before, sorted(sys.modules)]))
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    before, after = json.loads(proc.stdout)
    heavy = ("openai", "httpx", "httpx2", "httpcore", "httpcore2", "aiohttp", "anyio")
    assert [m for m in before if m.split(".")[0] in heavy] == []
    assert "openai" in after and "agentplan.integrations.openai" in after  # the check above could fail


def test_layout_built_in_actions_beside_the_plan_and_the_local_runner_beside_the_engine() -> None:
    from agentplan.plan.actions import BUILTIN_ACTIONS, CHAT_ACTION, CONTEXT_RETRIEVAL_ACTION, TOOL_ACTION
    from agentplan.runtime.local_execution_environment import LocalExecutionEnvironment

    assert [spec.name for spec in BUILTIN_ACTIONS] == [CHAT_ACTION, TOOL_ACTION, CONTEXT_RETRIEVAL_ACTION]
    assert agentplan.LocalExecutionEnvironment is LocalExecutionEnvironment
    assert type(agentplan.AgentsExecutionEnvironment.get_execution_environment()) is LocalExecutionEnvironment
