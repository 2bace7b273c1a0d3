"""Worker settings: every option in one place, with its guarantee-relevant defaults.

Sources, lowest to highest precedence: defaults, ``--config`` YAML file, ``AGENTFLEET_*``
environment variables, command-line flags. librdkafka properties (SASL/SSL, tuning) pass
through from the file's ``kafka:`` mapping, ``AGENTFLEET_KAFKA_<PROPERTY>`` variables
(``_`` for ``.``) and repeated ``--kafka-property key=value`` flags.
"""

from __future__ import annotations

import enum
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from worker.event_loop import EventLoop
from worker.exceptions import ConfigurationError
from worker.kafka.properties import RESERVED

ENV_PREFIX = "AGENTFLEET_"
KAFKA_ENV_PREFIX = "AGENTFLEET_KAFKA_"

RESERVED_KAFKA_PROPERTIES = RESERVED
# librdkafka properties whose values are redacted wherever settings are shown (substring match):
# sasl.password, ssl.key.password, ssl.keystore.password, ssl.key.pem, sasl.oauthbearer.client.secret,
# sasl.oauthbearer.config (may carry a client secret), ...
SECRET_PROPERTIES = ("password", "secret", "token", "key", "oauthbearer.config")
# Classic-protocol properties the broker owns under group.protocol=consumer (KIP-848), with what replaces
# each. librdkafka refuses them only when the consumer is created, after topics were created and the
# metrics server started, so WorkerSettings rejects them up front.
BROKER_OWNED_UNDER_CONSUMER_PROTOCOL = {
    "session.timeout.ms": "the session timeout is the group config consumer.session.timeout.ms "
                          "(default: the broker's group.consumer.session.timeout.ms)",
    "heartbeat.interval.ms": "the heartbeat interval is the group config consumer.heartbeat.interval.ms "
                             "(default: the broker's group.consumer.heartbeat.interval.ms)",
    "group.protocol.type": "the consumer protocol has no protocol type",
}
REDACTED = "***"


#: ``instance_id`` value that asks for the container's DNS name (see ``resolve_instance_id``).
REVERSE_DNS = "reverse-dns"


def resolve_instance_id(value: str, lookup: Callable[[str], tuple[str, Any, Any]] = socket.gethostbyaddr) -> str:
    """Turn ``reverse-dns`` into this host's DNS name; other values pass through.

    Docker Compose replicas share one service definition, so no per-replica value can be
    written into it. Docker's embedded DNS answers the reverse lookup of a container's
    address with its container name (``<project>-worker-3.<network>``), which is stable
    across restarts and distinct per replica: exactly what a transactional.id needs.
    """
    if value != REVERSE_DNS:
        return value
    try:
        address = socket.gethostbyname(socket.gethostname())
        full_name = lookup(address)[0]
    except OSError as exc:
        raise ConfigurationError("instance-id", f"{REVERSE_DNS}: no reverse-DNS name for this host: {exc}") from None
    name = full_name.split(".")[0]
    if not name or full_name == address or name == "localhost":
        raise ConfigurationError("instance-id", f"{REVERSE_DNS}: address {address} has no DNS name of its own "
                                                f"(got {full_name!r}); set a distinct id per worker")
    return name


class ProcessingGuarantee(str, enum.Enum):
    EXACTLY_ONCE = "exactly-once"
    AT_LEAST_ONCE = "at-least-once"


class GroupProtocol(str, enum.Enum):
    CLASSIC = "classic"  # client-side cooperative-sticky assignment, session timeout set by the worker
    CONSUMER = "consumer"  # KIP-848 (Kafka 4+): the broker assigns and owns session and heartbeats


class WorkerSettings(BaseModel):
    """All worker options. Field descriptions are the configuration reference."""

    model_config = ConfigDict(extra="forbid")

    agent: str = Field(description="the agent class, MODULE:CLASS, or FILE.yaml#NAME for a YAML agent")
    input_topic: str = Field(description="keyed input topic (JSON values)")
    output_topic: str = Field(description="topic receiving OutputEvent payloads as JSON")
    bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    app_id: str = Field("agentfleet", description="consumer group id; prefix of the changelog topic")
    input_model: str | None = Field(None, description="pydantic model MODULE:CLASS that input values must match")
    key_field: str | None = Field(None, description="JSON field that keys records, re-keyed through "
                                                    "<app-id>-repartition so a key always lands on one partition")
    state_dir: Path = Field(Path("./state"), description="RocksDB stores, one per assigned partition")
    instance_id: str = Field(default_factory=socket.gethostname,
                             description="stable per worker; part of transactional.id. "
                                         f"{REVERSE_DNS!r} takes the first label of this host's reverse-DNS "
                                         "name (docker compose replicas: <project>-worker-<n>)")
    max_inflight: int = Field(1024, ge=1, description="records consumed and not yet finished (a slot is free "
                                                      "when its run ends); a full window stops intake; at most "
                                                      "twice this many are uncommitted")
    commit_interval_ms: int = Field(100, ge=1, description="how often a transaction commits")
    processing_guarantee: ProcessingGuarantee = Field(ProcessingGuarantee.EXACTLY_ONCE,
                                                      description="exactly-once (transactions) or at-least-once")
    metrics_host: str = Field("0.0.0.0", description="bind address of /metrics, /healthz, /readyz")
    metrics_port: int = Field(9400, ge=-1, description="port of /metrics, /healthz, /readyz; -1 disables")
    dlq_topic: str | None = Field(None, description="dead-letter topic; default <input-topic>-dlq")
    replication_factor: int = Field(
        -1, ge=-1, description="replication factor of the topics the worker creates (changelog, dead-letter, "
                               "repartition); -1 takes the broker's default.replication.factor")
    max_record_bytes: int = Field(1_048_576, ge=1, description="larger input values go to the DLQ")
    transaction_timeout_ms: int = Field(10_000, ge=1000, description="broker aborts a transaction left open longer")
    session_timeout_ms: int = Field(10_000, ge=1000, description="consumer group session timeout (group protocol "
                                                                 "classic only)")
    group_protocol: GroupProtocol = Field(
        GroupProtocol.CLASSIC, description="consumer group protocol: classic (cooperative-sticky) or consumer "
                                           "(KIP-848, Kafka 4+: the broker assigns partitions and sets the session "
                                           "timeout, group.consumer.session.timeout.ms)")
    shutdown_grace_s: float = Field(30.0, ge=0, description="SIGTERM: time to finish in-flight runs")
    startup_timeout_s: float = Field(10.0, gt=0, description="time to reach the broker at start-up")
    broker_unreachable_timeout_s: float = Field(
        300.0, gt=0, description="mid-run: how long Kafka may stay unreachable (commits held, connections "
                                 "retried with back-off) before the worker exits with code 1")
    loop_stall_timeout_s: float = Field(
        180.0, gt=0, description="/healthz fails once the event loop has not completed a round for this long "
                                 "(a hung rebalance callback or an action blocking the loop), so an "
                                 "orchestrator restarts the worker")
    event_loop: EventLoop = Field(EventLoop.AUTO, description="the asyncio event loop: auto (default: uvloop "
                                                              "when installed, else asyncio), uvloop or asyncio")
    agent_config: Path | None = Field(None, description="YAML file of AgentConfiguration settings")
    approvals: bool = Field(False, description="runs may park on ApprovalRequestEvent: requests go to "
                                               "<app-id>-approvals, decisions are read from <app-id>-decisions "
                                               "(both created with the input's partition count)")
    resources: dict[str, str] = Field(default_factory=dict,
                                      description="environment resources NAME -> MODULE:ATTR (e.g. a connection "
                                                  "ResourceDescriptor), as env.add_resource does in code")
    kafka: dict[str, Any] = Field(default_factory=dict, repr=False,  # may hold passwords: never in repr()
                                  description="extra librdkafka properties")

    @model_validator(mode="after")
    def _check_group_protocol(self) -> WorkerSettings:
        """Fail at start-up, naming the setting, instead of when librdkafka refuses the consumer.

        Raises ConfigurationError itself (pydantic passes it through) so that direct construction
        and ``load`` give the same one-line message.
        """
        if "group.protocol" in self.kafka:
            raise ConfigurationError("kafka.group.protocol", "set it with group-protocol (--group-protocol, "
                                                             "AGENTFLEET_GROUP_PROTOCOL) instead")
        if self.group_protocol is not GroupProtocol.CONSUMER:
            return self
        for prop, instead in BROKER_OWNED_UNDER_CONSUMER_PROTOCOL.items():
            if prop in self.kafka:
                raise ConfigurationError(f"kafka.{prop}", f"not supported with group-protocol consumer: {instead}; "
                                                          "remove it")
        if "session_timeout_ms" in self.model_fields_set:
            raise ConfigurationError("session-timeout-ms", "has no effect with group-protocol consumer: "
                                     f"{BROKER_OWNED_UNDER_CONSUMER_PROTOCOL['session.timeout.ms']}; remove it")
        return self

    @property
    def changelog_topic(self) -> str:
        return f"{self.app_id}-state-changelog"

    @property
    def events_topic(self) -> str:
        """The event log (``event-log.*`` in the agent configuration), one partition per input partition."""
        return f"{self.app_id}-events"

    @property
    def repartition_topic(self) -> str:
        """Internal topic that re-keys records by ``key_field`` (used only when it is set)."""
        return f"{self.app_id}-repartition"

    @property
    def approvals_topic(self) -> str:
        return f"{self.app_id}-approvals"

    @property
    def decisions_topic(self) -> str:
        return f"{self.app_id}-decisions"

    @property
    def state_topic(self) -> str:
        """The topic whose partitions own key state: the repartition topic when re-keying."""
        return self.repartition_topic if self.key_field else self.input_topic

    @property
    def dead_letter_topic(self) -> str:
        return self.dlq_topic or f"{self.input_topic}-dlq"

    @property
    def transactional_id(self) -> str:
        return f"{self.app_id}-{self.instance_id}"

    @classmethod
    def load(cls, config_file: str | Path | None = None, env: dict[str, str] | None = None,
             **overrides: Any) -> WorkerSettings:
        """Merge file, environment and explicit values (``None`` values are ignored)."""
        environ = os.environ if env is None else env
        data: dict[str, Any] = {}
        file = config_file or environ.get(ENV_PREFIX + "CONFIG")
        if file:
            try:
                loaded = yaml.safe_load(Path(file).read_text()) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise ConfigurationError("config", f"cannot read {file}: {exc}") from exc
            if not isinstance(loaded, dict):
                raise ConfigurationError("config", f"{file} must hold a mapping")
            data.update({str(k).replace("-", "_"): v for k, v in loaded.items()})
        for name in cls.model_fields:
            raw = environ.get(ENV_PREFIX + name.upper())
            if raw is not None and name not in ("kafka", "resources"):
                data[name] = raw
        kafka = dict(data.get("kafka") or {})
        for var, value in environ.items():
            if var.startswith(KAFKA_ENV_PREFIX):
                kafka[var[len(KAFKA_ENV_PREFIX):].lower().replace("_", ".")] = value
        resources = dict(data.get("resources") or {})
        for item in filter(None, (environ.get(ENV_PREFIX + "RESOURCES") or "").split(",")):
            name, _, target = item.partition("=")
            resources[name.strip()] = target.strip()
        resources.update(overrides.pop("resources", None) or {})
        data["resources"] = resources
        extra_kafka = overrides.pop("kafka", None) or {}
        kafka.update(extra_kafka)
        data.update({k: v for k, v in overrides.items() if v is not None})
        data["kafka"] = kafka
        for prop in kafka:
            if prop in RESERVED_KAFKA_PROPERTIES:
                raise ConfigurationError(f"kafka.{prop}", "is set by the worker to keep its guarantees; remove it")
        if "instance_id" in data:
            data["instance_id"] = resolve_instance_id(str(data["instance_id"]))
        try:
            return cls(**data)
        except ValidationError as exc:
            first = exc.errors()[0]
            setting = ".".join(str(p) for p in first["loc"]) or "settings"
            raise ConfigurationError(setting.replace("_", "-"), first["msg"]) from None

    def redacted_kafka(self) -> dict[str, Any]:
        return {k: (REDACTED if any(s in k for s in SECRET_PROPERTIES) else v) for k, v in self.kafka.items()}

    def redacted_dump(self) -> dict[str, Any]:
        """Every setting as JSON-like data, librdkafka secrets replaced by ``***`` (for logs)."""
        return {**self.model_dump(mode="json", exclude={"kafka"}), "kafka": self.redacted_kafka()}
