"""A bad agent configuration (budgets included) stops the worker with one line naming the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.exceptions import ConfigurationError
from worker.plugins import load_agent_config


@pytest.mark.parametrize(("text", "message"), [
    ("budgets: {usd_per_window: 1.0}", "budgets: budgets.usd_per_window is a USD limit but no prices are configured"),
    ("budgets: {on_exceeded: sleep}", "budgets.on_exceeded: Input should be 'defer' or 'dead-letter'"),
    ("max_retries: -1", "max_retries: Input should be greater than or equal to 0"),
])
def test_one_line_naming_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as error:
        load_agent_config(path)
    assert error.value.setting == "agent-config"
    assert f"{path}: {message}" in str(error.value) and "\n" not in str(error.value)
