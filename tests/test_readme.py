"""README.md stays true: its references list every setting, metric (with labels) and command."""

from __future__ import annotations

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
    following = re.search(r"^#{2,3} ", README[start + len(title):], re.M)
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
