from pathlib import Path

import pytest

from worker.config import ProcessingGuarantee, WorkerSettings
from worker.exceptions import ConfigurationError

REQUIRED = {"agent": "m:A", "input_topic": "in", "output_topic": "out"}


def test_precedence_file_env_explicit(tmp_path: Path):
    file = tmp_path / "w.yaml"
    file.write_text("app-id: from-file\nmax_inflight: 10\ncommit_interval_ms: 7\nkafka:\n  security.protocol: SSL\n")
    env = {"AGENTFLEET_MAX_INFLIGHT": "20", "AGENTFLEET_KAFKA_SASL_MECHANISM": "PLAIN"}
    s = WorkerSettings.load(file, env=env, max_inflight=30, **REQUIRED)
    assert (s.app_id, s.max_inflight, s.commit_interval_ms) == ("from-file", 30, 7)
    assert s.kafka == {"security.protocol": "SSL", "sasl.mechanism": "PLAIN"}
    assert s.changelog_topic == "from-file-state-changelog"
    assert s.dead_letter_topic == "in-dlq"
    assert s.processing_guarantee is ProcessingGuarantee.EXACTLY_ONCE


def test_errors_name_the_setting():
    with pytest.raises(ConfigurationError, match="max-inflight"):
        WorkerSettings.load(env={}, max_inflight=0, **REQUIRED)
    with pytest.raises(ConfigurationError, match="processing-guarantee"):
        WorkerSettings.load(env={}, processing_guarantee="twice", **REQUIRED)
    with pytest.raises(ConfigurationError, match="kafka.enable.auto.commit"):
        WorkerSettings.load(env={}, kafka={"enable.auto.commit": "true"}, **REQUIRED)
    with pytest.raises(ConfigurationError, match="input-topic"):
        WorkerSettings.load(env={}, agent="m:A", output_topic="o")


def test_secrets_redacted():
    s = WorkerSettings.load(env={}, kafka={"sasl.password": "hunter2", "sasl.username": "u"}, **REQUIRED)
    assert s.redacted_kafka() == {"sasl.password": "***", "sasl.username": "u"}


def test_resources_from_env_and_explicit():
    s = WorkerSettings.load(env={"AGENTFLEET_RESOURCES": "a=m:x, b=m:y"}, resources={"b": "m:z"}, **REQUIRED)
    assert s.resources == {"a": "m:x", "b": "m:z"}
