"""Every ``agentfleet ... --help`` reads cleanly: no internal type names (``<bool>``, ``<list[str]>``,
``<FileText>``...), flags shown as flags, and each option's default and environment variable named."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from worker.cli import app
from worker.config import WorkerSettings

REPO = Path(__file__).resolve().parents[2]
# Wide enough that rich never breaks a variable name or a default across lines.
WIDE = {"COLUMNS": "250", "TERM": "dumb", "NO_COLOR": "1"}
# A label typer derives from a Python type: <bool>, <int>, <float range>, <list[str]>, <FileText>, <path>...
# Documented placeholders such as <app-id>-repartition or <input-topic>-dlq contain a dash.
INTERNAL_TYPE = re.compile(r"<(?:bool|int|float|str|bytes|path|file|text|choice|uuid|datetime|tuple|list|dict|"
                           r"[a-z]+ range|[A-Z][a-z]+[A-Za-z]*)(?:\[[^<>]*\])?(?:\.\.\.)?>")


def _commands() -> list[tuple[list[str], Any]]:
    found = []

    def walk(command: Any, path: list[str]) -> None:
        found.append((path, command))
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


COMMANDS = _commands()


def _help(path: list[str]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    return result.output


def _one_line(text: str) -> str:
    """The help as one line of words: rich may wrap inside a column, between the panel's borders."""
    return " ".join(text.replace("│", " ").split())


def test_the_pattern_catches_what_typer_prints_by_default():
    for label in ("<bool>", "<int>", "<str>", "<list[str]>", "<FileText>", "<float range>", "<int range>", "<path>"):
        assert INTERNAL_TYPE.search(f"--flag  {label}  help"), label
    for placeholder in ("<app-id>-repartition", "<input-topic>-dlq", "<project>-worker-<n>",
                        "AGENTFLEET_KAFKA_<PROPERTY>"):
        assert not INTERNAL_TYPE.search(placeholder), placeholder


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "agentfleet")
def test_help_shows_no_internal_type_names(path: list[str]):
    text = _help(path)
    assert not INTERNAL_TYPE.findall(text), INTERNAL_TYPE.findall(text)


@pytest.mark.parametrize("path,command", [c for c in COMMANDS if not getattr(c[1], "commands", None)],
                         ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_help_names_every_default_and_environment_variable(path: list[str], command: Any):
    text = _one_line(_help(path))
    for param in command.params:
        if param.name == "help":
            continue
        envvar = getattr(param, "envvar", None)
        if envvar:
            assert envvar in text, f"{path}: {param.name}: {envvar} not shown"
        default = param.default
        if isinstance(default, bool) or default is None or default == [] or param.required:
            continue
        shown = str(default)
        assert f"default: {shown}" in text or f"default {shown}" in text, f"{path}: {param.name}: default {shown}"


def test_worker_help_names_each_setting_its_default_and_variable():
    text = _one_line(_help(["worker"]))
    for name, field in WorkerSettings.model_fields.items():
        variable = f"AGENTFLEET_{name.upper()}"
        if name == "kafka":
            assert "AGENTFLEET_KAFKA_<PROPERTY>" in text
            continue
        assert variable in text, variable
        if name != "resources":
            assert f"--{name.replace('_', '-')} " in text, name
        if field.is_required():
            assert f"(required; env {variable})" in text, name
    assert "(default 1024; env AGENTFLEET_MAX_INFLIGHT)" in text
    assert "(default ./state; env AGENTFLEET_STATE_DIR)" in text
    assert "(default this host's name; env AGENTFLEET_INSTANCE_ID)" in text


def test_flags_take_no_value_and_show_as_flags():
    produce = _one_line(_help(["produce"]))
    assert re.search(r"--strict refuse to send keyless records", produce)
    create = _one_line(_help(["topics", "create"]))
    assert "--compact cleanup.policy=compact" in create and "--no-compact" not in create
    assert "TOPIC..." in create


def test_the_installed_entry_point_prints_the_same_clean_help():
    out = subprocess.run([sys.executable, "-m", "worker.cli", "topics", "create", "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=60, env={**os.environ, **WIDE}, check=False)
    assert out.returncode == 0, out.stderr
    assert "TOPIC..." in out.stdout and not INTERNAL_TYPE.search(out.stdout)
