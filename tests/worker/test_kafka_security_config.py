"""Issue 6, security: librdkafka SASL/SSL settings pass through to every client; secrets stay redacted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from worker.config import WorkerSettings
from worker.exceptions import ConfigurationError
from worker.kafka.clients import ClientConfigs
from worker.kafka.topology import prepare_topics

REPO = Path(__file__).resolve().parents[2]
REQUIRED = {"agent": "tests.worker.integration.agents:PoisonAgent", "input_topic": "in", "output_topic": "out"}
SASL_SSL = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "svc",
            "ssl.ca.location": "/etc/ssl/ca.pem"}


def settings_from_every_source(tmp_path: Path) -> WorkerSettings:
    file = tmp_path / "worker.yaml"
    file.write_text("kafka:\n  security.protocol: SASL_SSL\n  sasl.mechanism: SCRAM-SHA-512\n")
    env = {"AGENTFLEET_KAFKA_SASL_USERNAME": "svc", "AGENTFLEET_KAFKA_SASL_PASSWORD": "pw-from-env"}
    return WorkerSettings.load(file, env=env, kafka={"ssl.ca.location": "/etc/ssl/ca.pem"}, **REQUIRED)


def test_sasl_ssl_settings_reach_producer_consumer_restore_and_admin_configs(tmp_path: Path):
    settings = settings_from_every_source(tmp_path)
    clients = ClientConfigs(settings)
    expected = {**SASL_SSL, "sasl.password": "pw-from-env"}
    for config in (clients.producer(), clients.consumer(), clients.base()):
        assert {k: config[k] for k in expected} == expected
    # The worker's own guarantees still win over anything passed through.
    assert clients.consumer()["isolation.level"] == "read_committed"
    assert clients.producer()["enable.idempotence"] is True


def test_the_admin_client_gets_the_same_properties(tmp_path: Path):
    """librdkafka validates what it is handed: a bad value proves the property reached the admin client."""
    settings = WorkerSettings.load(env={}, bootstrap_servers="127.0.0.1:1", kafka={"security.protocol": "bogus"},
                                   **REQUIRED)
    with pytest.raises(ConfigurationError, match=r'^kafka\.security\.protocol: Invalid value "bogus"'):
        prepare_topics(settings)


@pytest.mark.parametrize("source", ["yaml", "env", "flag"])
def test_reserved_properties_are_rejected_naming_the_setting(tmp_path: Path, source: str):
    file = tmp_path / "w.yaml"
    file.write_text("kafka:\n  isolation.level: read_uncommitted\n")
    with pytest.raises(ConfigurationError) as info:
        if source == "yaml":
            WorkerSettings.load(file, env={}, **REQUIRED)
        elif source == "env":
            WorkerSettings.load(env={"AGENTFLEET_KAFKA_TRANSACTIONAL_ID": "x"}, **REQUIRED)
        else:
            WorkerSettings.load(env={}, kafka={"enable.auto.commit": "true"}, **REQUIRED)
    assert info.value.setting in ("kafka.isolation.level", "kafka.transactional.id", "kafka.enable.auto.commit")
    assert "keep its guarantees" in info.value.message


def test_secrets_never_appear_in_the_settings_dump_or_repr(tmp_path: Path):
    settings = WorkerSettings.load(env={}, kafka={
        "sasl.password": "pw-1", "ssl.key.password": "pw-2", "ssl.keystore.password": "pw-3",
        "sasl.oauthbearer.client.secret": "pw-4", "sasl.oauthbearer.config": "clientSecret=pw-5",
        "ssl.key.pem": "-----BEGIN PRIVATE KEY----- pw-6", "sasl.username": "svc"}, **REQUIRED)
    shown = f"{settings.redacted_dump()} {settings!r} {settings}"
    for secret in ("pw-1", "pw-2", "pw-3", "pw-4", "pw-5", "pw-6"):
        assert secret not in shown
    assert settings.redacted_dump()["kafka"]["sasl.username"] == "svc"
    assert settings.redacted_dump()["kafka"]["sasl.password"] == "***"


@pytest.mark.parametrize("prop,setting", [("security.protocol=bogus", "kafka.security.protocol"),
                                          ("no.such.property=1", "kafka.no.such.property")])
def test_cli_rejects_properties_librdkafka_refuses_naming_them(tmp_path: Path, prop: str, setting: str):
    out = subprocess.run([sys.executable, "-m", "worker.cli", "worker", "--agent", REQUIRED["agent"],
                          "--input-topic", "i", "--output-topic", "o", "--bootstrap-servers", "127.0.0.1:1",
                          "--metrics-port", "-1", "--state-dir", str(tmp_path / "state"), "-X", prop],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert f"{setting}: " in out.stderr
    assert "Traceback" not in out.stderr
