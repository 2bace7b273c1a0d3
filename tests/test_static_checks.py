"""The packages stay ruff- and mypy-clean (settings in pyproject.toml): CI fails on a new finding.

The tools run in the background from the end of collection on (tests/static_checks.py)."""

from __future__ import annotations

import pytest

from tests import static_checks


@pytest.mark.parametrize("tool", sorted(static_checks.TOOLS))
def test_static_checks_pass(tool: str) -> None:
    code, report = static_checks.result(tool)
    assert code == 0, report
