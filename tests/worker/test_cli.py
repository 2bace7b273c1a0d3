import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def test_help_lists_commands():
    out = run_cli("--help")
    assert out.returncode == 0
    for command in ("worker", "broker", "llm-stub"):
        assert command in out.stdout


def test_bad_agent_path_fails_fast_naming_the_setting():
    out = run_cli("worker", "--agent", "no.such.module:Agent", "--input-topic", "i", "--output-topic", "o")
    assert out.returncode == 2
    assert "agent: cannot import 'no.such.module:Agent'" in out.stderr


def test_bad_guarantee_and_property():
    out = run_cli("worker", "--agent", "m:A", "--input-topic", "i", "--output-topic", "o",
                  "--processing-guarantee", "twice")
    assert out.returncode == 2 and "processing-guarantee" in out.stderr
    out = run_cli("worker", "--agent", "m:A", "--input-topic", "i", "--output-topic", "o", "-X", "novalue")
    assert out.returncode == 2 and "kafka-property" in out.stderr


def test_unreachable_broker_fails_fast():
    out = run_cli("worker", "--agent", "examples.sentiment.sentiment_agent:SentimentAnalysisAgent",
                  "--resource", "local_llm=examples.sentiment.custom_types:local_llm_descriptor",
                  "--input-topic", "i", "--output-topic", "o", "--bootstrap-servers", "127.0.0.1:1",
                  # Not the default deadline's test (test_resource_limits times the deadline): no 10 s wait.
                  "--startup-timeout-s", "2", "--metrics-port", "-1", timeout=60)
    assert out.returncode == 2
    assert "bootstrap.servers: cannot reach Kafka" in out.stderr


@pytest.mark.integration
def test_missing_input_topic_fails_fast(kafka):
    out = run_cli("worker", "--agent", "tests.worker.integration.agents:PoisonAgent", "--input-topic",
                  "does-not-exist", "--output-topic", "o", "--bootstrap-servers", kafka.bootstrap_servers,
                  "--metrics-port", "-1")
    assert out.returncode == 2
    assert "input-topic: topic 'does-not-exist' does not exist" in out.stderr


def test_every_command_has_help():
    import typer.main
    from typer.testing import CliRunner

    from worker.cli import app

    def walk(command, path: list[str]) -> list[list[str]]:
        subcommands = getattr(command, "commands", None)
        return [path] if not subcommands else [p for n, c in subcommands.items() for p in walk(c, [*path, n])]

    paths = walk(typer.main.get_command(app), [])
    assert len(paths) >= 12
    for path in paths:
        out = CliRunner().invoke(app, [*path, "--help"])
        assert out.exit_code == 0 and "Usage" in out.output, path


@pytest.mark.parametrize("args,named", [
    (["llm-stub", "--error-rate", "2"], "--error-rate"),
    (["llm-stub", "--latency-ms", "-5"], "--latency-ms"),
    (["llm-stub", "--rate-limit", "-1"], "--rate-limit"),
    (["topics", "create", "t", "--partitions", "0"], "--partitions"),
    (["consume", "t", "--max", "0"], "--max"),
    (["demo", "--count", "many"], "--count"),
])
def test_bad_option_values_exit_2_naming_the_option(args: list[str], named: str):
    out = run_cli(*args, timeout=30)
    assert out.returncode == 2, out.stdout + out.stderr
    assert named in out.stderr


def test_worker_settings_come_from_the_environment_too():
    # Compose and Kubernetes configure workers through AGENTFLEET_* variables only.
    import os

    env = {**os.environ, "AGENTFLEET_AGENT": "m:A", "AGENTFLEET_INPUT_TOPIC": "i", "AGENTFLEET_OUTPUT_TOPIC": "o",
           "AGENTFLEET_PROCESSING_GUARANTEE": "twice"}
    out = subprocess.run([sys.executable, "-m", "worker.cli", "worker"], cwd=REPO, capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.returncode == 2 and "processing-guarantee" in out.stderr, out.stderr


@pytest.mark.parametrize("level, expected", [("INFO", "WARNING WARNING"), ("DEBUG", "DEBUG DEBUG")])
def test_http_libraries_do_not_log_every_model_call_below_debug(level: str, expected: str) -> None:
    code = (f"import logging; from worker.cli import _setup_logging; _setup_logging({level!r}); "
            "print(*(logging.getLevelName(logging.getLogger(n).getEffectiveLevel()) for n in ('httpx', 'httpx2')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == expected, out.stderr
