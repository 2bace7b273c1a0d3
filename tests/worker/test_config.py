from pathlib import Path

import pytest

from worker.config import REVERSE_DNS, GroupProtocol, ProcessingGuarantee, WorkerSettings, resolve_instance_id
from worker.exceptions import ConfigurationError
from worker.kafka.clients import ClientConfigs

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


def test_reverse_dns_instance_id_takes_the_container_name():
    # Docker's embedded DNS answers a replica's address with <project>-<service>-<n>.<network>.
    resolved = resolve_instance_id(REVERSE_DNS, lambda address: ("fleet-worker-3.fleet_default", [], [address]))
    assert resolved == "fleet-worker-3"
    assert resolve_instance_id("worker-a") == "worker-a"


@pytest.mark.parametrize("answer", [OSError("no PTR record"), "localhost", "ADDRESS"])
def test_reverse_dns_without_a_name_fails_fast_naming_the_setting(answer: object):
    def lookup(address: str) -> tuple[str, list[str], list[str]]:
        if isinstance(answer, Exception):
            raise answer
        return (address if answer == "ADDRESS" else str(answer), [], [address])

    with pytest.raises(ConfigurationError, match="instance-id") as caught:
        resolve_instance_id(REVERSE_DNS, lookup)
    assert "reverse-dns" in str(caught.value)



@pytest.mark.parametrize("kafka", [{"session.timeout.ms": "6000"}, {"heartbeat.interval.ms": "1000"},
                                   {"group.protocol.type": "consumer"}])
def test_consumer_group_protocol_rejects_classic_properties_naming_them(kafka: dict[str, str]):
    # librdkafka refuses these only when the consumer is created, after topics and the metrics server.
    prop = next(iter(kafka))
    with pytest.raises(ConfigurationError) as caught:
        WorkerSettings.load(env={"AGENTFLEET_GROUP_PROTOCOL": "consumer"}, kafka=kafka, **REQUIRED)
    assert caught.value.setting == f"kafka.{prop}" and "group-protocol consumer" in caught.value.message
    assert "\n" not in str(caught.value)
    assert WorkerSettings.load(env={}, kafka=kafka, **REQUIRED).group_protocol is GroupProtocol.CLASSIC


def test_consumer_group_protocol_rejects_the_session_setting_and_names_the_broker_config():
    with pytest.raises(ConfigurationError, match="session-timeout-ms: .*group.consumer.session.timeout.ms"):
        WorkerSettings.load(env={"AGENTFLEET_SESSION_TIMEOUT_MS": "6000"}, group_protocol="consumer", **REQUIRED)
    with pytest.raises(ConfigurationError, match="group-protocol"):
        WorkerSettings.load(env={}, group_protocol="kip-848", **REQUIRED)


def test_group_protocol_is_set_only_through_its_setting():
    with pytest.raises(ConfigurationError, match="kafka.group.protocol: set it with group-protocol"):
        WorkerSettings.load(env={}, kafka={"group.protocol": "consumer"}, **REQUIRED)


def test_each_group_protocol_gets_only_the_consumer_properties_it_takes():
    required = {**REQUIRED, "agent": "tests.worker.integration.agents:PoisonAgent"}
    classic = ClientConfigs(WorkerSettings.load(env={}, **required)).consumer()
    assert classic["partition.assignment.strategy"] == "cooperative-sticky" and "group.protocol" not in classic
    assert (classic["session.timeout.ms"], classic["heartbeat.interval.ms"]) == (10_000, 1000)
    settings = WorkerSettings.load(env={}, group_protocol="consumer", kafka={"group.remote.assignor": "range"},
                                   **required)
    consumer = ClientConfigs(settings).consumer()
    assert consumer["group.protocol"] == "consumer" and consumer["group.remote.assignor"] == "range"
    assert not {"session.timeout.ms", "heartbeat.interval.ms", "partition.assignment.strategy"} & set(consumer)
    assert consumer["isolation.level"] == "read_committed" and consumer["enable.auto.commit"] is False
