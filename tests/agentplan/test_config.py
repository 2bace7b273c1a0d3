"""AgentConfiguration: defaults, YAML file, AGENTPLAN_* environment, explicit keyword precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentplan import AgentConfiguration, AgentPlanError, ErrorHandlingStrategy


def test_defaults() -> None:
    config = AgentConfiguration.load(env={})
    assert config == AgentConfiguration()
    assert config.error_handling_strategy is ErrorHandlingStrategy.FAIL
    assert config.max_retries == 3
    assert config.max_tool_call_rounds == 10
    assert config.structured_output_retries == 1
    assert config.max_concurrent_runs == 1024
    assert config.transient_retry_limit is None
    assert config.extra == {}


def test_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("error-handling-strategy: dead-letter\nmax_retries: 5\nretry-backoff-s: 0.5\n"
                    "my_setting: hello\n")
    config = AgentConfiguration.load(path, env={})
    assert config.error_handling_strategy is ErrorHandlingStrategy.DEAD_LETTER
    assert config.max_retries == 5
    assert config.retry_backoff_s == 0.5
    assert config.extra == {"my_setting": "hello"}
    assert config.get("my-setting") == "hello"
    assert config.get("max-retries") == 5
    assert config.get("absent", "dflt") == "dflt"


def test_environment_variables() -> None:
    env = {"AGENTPLAN_ERROR_HANDLING_STRATEGY": "ignore", "AGENTPLAN_MAX_TOOL_CALL_ROUNDS": "4",
           "AGENTPLAN_TRANSIENT_RETRY_LIMIT": "none", "AGENTPLAN_RETRY_BACKOFF_S": "0.05", "UNRELATED": "x"}
    config = AgentConfiguration.load(env=env)
    assert config.error_handling_strategy is ErrorHandlingStrategy.IGNORE
    assert config.max_tool_call_rounds == 4
    assert config.transient_retry_limit is None
    assert config.retry_backoff_s == 0.05


def test_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTPLAN_MAX_CONCURRENT_RUNS", "7")
    assert AgentConfiguration.load().max_concurrent_runs == 7


def test_precedence_defaults_yaml_env_kwargs(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("max_retries: 5\nmax_tool_call_rounds: 6\nstructured_output_retries: 2\n")
    env = {"AGENTPLAN_MAX_TOOL_CALL_ROUNDS": "8", "AGENTPLAN_STRUCTURED_OUTPUT_RETRIES": "3"}
    config = AgentConfiguration.load(path, env=env, structured_output_retries=4)
    assert config.max_retries == 5  # yaml over default
    assert config.max_tool_call_rounds == 8  # env over yaml
    assert config.structured_output_retries == 4  # kwargs over env
    assert config.max_concurrent_runs == 1024  # default untouched


@pytest.mark.parametrize(
    "kwargs, field",
    [({"max_retries": -1}, "max_retries"), ({"error_handling_strategy": "explode"}, "error_handling_strategy"),
     ({"max_concurrent_runs": 0}, "max_concurrent_runs"), ({"retry_backoff_s": "soon"}, "retry_backoff_s")],
)
def test_bad_values_are_clear_errors(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(AgentPlanError, match="invalid agent configuration") as info:
        AgentConfiguration.load(env={}, **kwargs)
    assert field in str(info.value)


def test_bad_environment_value_names_the_field() -> None:
    with pytest.raises(AgentPlanError, match="max_retries"):
        AgentConfiguration.load(env={"AGENTPLAN_MAX_RETRIES": "lots"})


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(AgentPlanError, match="agent config file"):
        AgentConfiguration.load(tmp_path / "missing.yaml", env={})
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(AgentPlanError, match="mapping"):
        AgentConfiguration.load(listing, env={})
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1, 2\n")
    with pytest.raises(AgentPlanError, match="agent config file"):
        AgentConfiguration.load(broken, env={})
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert AgentConfiguration.load(empty, env={}) == AgentConfiguration()


def test_set_validates_and_extra_keys() -> None:
    config = AgentConfiguration()
    config.set("max-retries", 9)
    assert config.max_retries == 9
    config.set("team", "search")
    assert config.get("team") == "search"
    with pytest.raises(ValueError):
        config.set("max_retries", -3)
    with pytest.raises(ValueError):
        AgentConfiguration(no_such_field=1)  # type: ignore[call-arg]


def test_backoff_doubles_and_is_capped() -> None:
    config = AgentConfiguration(retry_backoff_s=0.1, retry_backoff_max_s=0.5)
    assert [config.backoff(i) for i in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
