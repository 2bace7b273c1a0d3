"""Readers for the files under deploy/, docker-compose.yml and Dockerfile, shared by the deploy tests."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import typer.main
import yaml

from worker.cli import app

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
K8S_DIR = REPO / "deploy" / "k8s"
ALERTS_FILE = REPO / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS_FILE = REPO / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD_DIR = REPO / "deploy" / "grafana" / "dashboards"

_METRIC = re.compile(r"\bagentfleet_[a-z0-9_]+")
_HISTOGRAM_SERIES = re.compile(r"_(bucket|count|sum)$")


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in sorted(K8S_DIR.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def promql_expressions() -> dict[str, str]:
    """Every PromQL expression of the alert rules and dashboards, keyed by where it is."""
    found: dict[str, str] = {}
    for group in yaml.safe_load(ALERTS_FILE.read_text())["groups"]:
        for rule in group["rules"]:
            found[f"alert {rule['alert']}"] = rule["expr"]
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                found[f"{path.name}: {panel['title']} [{target['refId']}]"] = target["expr"]
    return found


def metric_families(expression: str) -> set[str]:
    """Metric family names an expression reads (histogram series map to their family)."""
    return {_HISTOGRAM_SERIES.sub("", name) if name.endswith(("_bucket", "_count", "_sum")) else name
            for name in _METRIC.findall(expression)}


def parse_cli(args: list[str]) -> Any:
    """Parse an ``agentfleet`` command line the way the entry point would, without running it.

    Returns the innermost command's context; raises the CLI's usage error on a bad argument.
    """
    command: Any = typer.main.get_command(app)
    ctx = command.make_context("agentfleet", list(args))
    while hasattr(command, "resolve_command"):  # a command group: descend into the subcommand
        remaining = [*getattr(ctx, "_protected_args", []), *ctx.args]
        name, sub, rest = command.resolve_command(ctx, remaining)
        assert sub is not None, f"unknown command {name!r}"
        command, ctx = sub, sub.make_context(name or "", rest, parent=ctx)
    return ctx


_VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(:?-([^}]*))?\}")


def compose_variables() -> dict[str, str | None]:
    """``${VAR:-default}`` references in docker-compose.yml: name -> default (None when it has none)."""
    return {m.group(1): m.group(3) for m in _VARIABLE.finditer(COMPOSE_FILE.read_text())}


def interpolate(value: str) -> str:
    """Substitute compose variables with their defaults, as `docker compose up` does with no .env."""
    return _VARIABLE.sub(lambda m: m.group(3) or "", value)
