"""Prometheus' own checker on the deploy files: ``promtool check rules``, ``promtool check config`` and
the alert rules' unit tests (``promtool test rules``: each alert fires when it should, stays silent
when it should not).

promtool comes from Debian's ``prometheus`` package, which ``.ci/run`` installs. Locally the tests
skip, saying so, when it is missing; under CI (``CI`` set) a missing promtool fails instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.deploy_files import ALERTS_FILE, PROMETHEUS_FILE, REPO

RULE_TESTS = ALERTS_FILE.with_name("alerts_test.yml")


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing under CI: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool not installed (apt-get install prometheus; .ci/run installs it)")
    return found


def run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120, check=False)


def test_alert_rules_pass_promtool_check_rules(promtool: str):
    out = run(promtool, "check", "rules", "--lint=all", str(ALERTS_FILE))
    assert out.returncode == 0, out.stdout + out.stderr
    rules = sum(len(group["rules"]) for group in yaml.safe_load(ALERTS_FILE.read_text())["groups"])
    assert f"SUCCESS: {rules} rules found" in out.stdout


def test_every_alert_has_a_unit_test_that_fires_it(promtool: str):
    alerts = {rule["alert"] for group in yaml.safe_load(ALERTS_FILE.read_text())["groups"] for rule in group["rules"]}
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test.get("alert_rule_test", []) if case["exp_alerts"]}
    assert alerts == fired, f"alerts without a firing test: {sorted(alerts - fired)}"


def test_alert_rules_unit_tests_pass(promtool: str):
    out = run(promtool, "test", "rules", str(RULE_TESTS))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_the_rule_tests_fail_when_an_alert_is_broken(promtool: str, tmp_path: Path):
    """The unit tests are not vacuous: a raised threshold makes them fail."""
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    broken = ALERTS_FILE.read_text().replace("increase(agentfleet_records_lost_to_retention_total[15m])) > 0",
                                             "increase(agentfleet_records_lost_to_retention_total[15m])) > 100")
    assert broken != ALERTS_FILE.read_text()
    (tmp_path / ALERTS_FILE.name).write_text(broken)
    out = run(promtool, "test", "rules", str(tmp_path / RULE_TESTS.name))
    assert out.returncode != 0 and "AgentFleetInputLostToRetention" in out.stdout + out.stderr


def test_prometheus_config_passes_promtool_check_config(promtool: str, tmp_path: Path):
    """The compose file's Prometheus config, with its rule files resolved through the compose mounts."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = {target: source for source, target in
              (volume.split(":")[:2] for volume in compose["services"]["prometheus"]["volumes"])}
    config = yaml.safe_load(PROMETHEUS_FILE.read_text())
    config["rule_files"] = [str((REPO / mounts[path]).resolve()) for path in config["rule_files"]]
    checked = tmp_path / "prometheus.yml"
    checked.write_text(yaml.safe_dump(config))
    out = run(promtool, "check", "config", str(checked))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout and str(ALERTS_FILE) in out.stdout
