"""README.md stays true: its references list every setting, metric (with labels) and command."""

from __future__ import annotations

import json
import re
from pathlib import Path

import typer.main

from worker.cli import app
from worker.config import WorkerSettings
from worker.observability.metrics import METRIC_NAMES, PREFIX, WorkerMetrics

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(title)
    following = re.search(r"^#{2,3} ", README[start + len(title):], re.MULTILINE)
    return README[start: start + len(title) + (following.start() if following else len(README))]


def test_configuration_reference_names_every_worker_setting():
    reference = section("### Configuration reference")
    for name in WorkerSettings.model_fields:
        flags = {"--" + name.replace("_", "-"), "--" + name.removesuffix("s").replace("_", "-")}  # --resource
        named = any(f"`{flag}" in reference for flag in flags) or f"`{name}`" in reference
        assert named or name == "kafka" and "-X key=value" in reference, name


def test_metrics_reference_lists_every_metric_with_its_labels():
    rows = [line for line in section("### Metrics reference").splitlines() if line.startswith("| `")]
    metrics = WorkerMetrics()
    for full_name in METRIC_NAMES:
        name = full_name.removeprefix(PREFIX)
        row = next((r for r in rows if f"`{name}`" in r), None)
        assert row is not None, f"{full_name} is not in the metrics reference"
        labels = set(getattr(metrics, name)._labelnames)
        assert all(label in row.split("|")[-2] for label in labels), f"{name}: labels {labels} not all listed"


def test_command_table_lists_every_command():
    table = section("## Command line")

    def walk(command, prefix: str) -> list[str]:
        subcommands = getattr(command, "commands", None)
        if not subcommands:
            return [prefix]
        return [p for name, sub in subcommands.items() for p in walk(sub, f"{prefix} {name}")]

    for command in walk(typer.main.get_command(app), "agentfleet"):
        parent, _, leaf = command.rpartition(" ")
        assert command in table or re.search(re.escape(parent) + r" [a-z|\\]*" + leaf, table), command


def test_readme_test_command_is_what_ci_runs():
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert f"```bash\n{ci}\n```" in README


def test_writing_agents_snippet_is_complete_and_runs(tmp_path: Path):
    """The agent in "Writing agents" defines every name it uses and runs as the README says:
    saved as a file and run with python, on the local runner, against a model server."""
    import ast
    import builtins
    import os
    import subprocess
    import sys

    from agentplan.testing.llm_stub import StubLLMServer

    blocks = re.findall(r"```python\n(.*?)```", section("## Writing agents"), re.DOTALL)
    assert len(blocks) == 1
    code = blocks[0]
    tree = ast.parse(code)
    defined = set(dir(builtins)) | {"__name__"}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            defined |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defined.add(node.name)
            defined |= {arg.arg for arg in node.args.args} if isinstance(node, ast.FunctionDef) else set()
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            defined.add(node.id)
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
    assert used <= defined, f"undefined names in the snippet: {sorted(used - defined)}"

    script = tmp_path / "sentiment.py"
    script.write_text(code)
    with StubLLMServer() as stub:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AGENTPLAN_"))}
        out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                             timeout=120, check=False, env={**env, "OPENAI_BASE_URL": stub.base_url})
    assert out.returncode == 0, out.stderr
    results = [json.loads(line) for line in out.stdout.splitlines()]
    assert sorted(r["id"] for r in results) == ["1", "2"]
    assert all(r["sentiment"] in ("positive", "negative", "neutral") and r["key_phrases"] for r in results)


def test_command_table_names_only_real_options():
    root = typer.main.get_command(app)
    rows = [line for line in section("## Command line").splitlines() if line.startswith("| `agentfleet")]
    assert len(rows) >= 12
    checked = 0
    for row in rows:
        first_cell = row.split(" | ")[0]
        for usage in re.findall(r"`(agentfleet [^`]*)`", first_cell):
            command, words = root, usage.split()[1:]
            while words and getattr(command, "commands", None) and words[0] in command.commands:
                command = command.commands[words.pop(0)]
            if getattr(command, "commands", None) and words and not words[0].startswith("-"):
                command = command.commands[words.pop(0).split("|")[0].strip("\\")]  # create|delete: the first
            options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
            for flag in re.findall(r"(?<![\w|\\-])(--?[a-zA-Z][\w-]*)", " ".join(words)):
                assert flag in options, f"{usage}: {flag} is not an option of {command.name}"
                checked += 1
    assert checked >= 30
