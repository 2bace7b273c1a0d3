"""SASL/SCRAM with ACLs under the StandardAuthorizer: README's ACL list is exactly what the worker needs.

One Apache Kafka node for the module, with a SCRAM listener and ACLs enforced (no ACL, no access).
The worker, a real process logged in as ``worker``, gets exactly the ACLs of README "Security: ACLs
the worker needs" (the table is parsed, its placeholders filled in) and processes records exactly
once, both with topics created by an operator and by itself. With any one ACL removed it exits 2
within seconds, naming that ACL, before it writes anything. Its password appears neither in its log
nor on its HTTP endpoints.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from tests.worker.integration.harness import REPO, WorkerProcess, wait_for
from worker.config import ProcessingGuarantee, WorkerSettings
from worker.exceptions import EmbeddedBrokerError
from worker.kafka.acls import Acl, required_acls
from worker.kafka.admin import TopicAdmin
from worker.kafka.apache import ApacheKafka, check_requirements

pytestmark = pytest.mark.integration

AGENT = "tests.worker.integration.agents:PoisonAgent"  # echoes its input; raises on {"poison": true}
PARTITIONS = 2
RECORDS = 20
INSTANCE = "w1"
WORKER_USER = "worker"
# Canaries: unique per run, so finding one anywhere is a leak and not a coincidence.
_TAG = uuid.uuid4().hex[:12]
ADMIN_PASSWORD = f"admin-pw-{_TAG}"
WORKER_PASSWORD = f"worker-pw-canary-{_TAG}"
# Python start-up plus a few broker round trips; measured 1.5-3 s per missing ACL.
FAIL_FAST_S = 20.0
ACL_VISIBLE_S = 10.0

_RESOURCE_TYPES = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP,
                   "transactional id": ResourceType.TRANSACTIONAL_ID}
_REFUSED = {"topic": "TOPIC_AUTHORIZATION_FAILED", "group": "GROUP_AUTHORIZATION_FAILED",
            "transactional id": "TRANSACTIONAL_ID_AUTHORIZATION_FAILED"}


# -- README's ACL table ------------------------------------------------------------------------------

_README = (REPO / "README.md").read_text()
_ROW = re.compile(r"^\| (topic|group|transactional id) \| `([^`]+)` \| ([^|]+) \| ([^|]+) \|$", re.MULTILINE)


def readme_acls(creates_topics: bool, key_field: bool = False, exactly_once: bool = True,
                event_log: bool = False) -> list[Acl]:
    """The README table's rows as ACLs on placeholder names (``<input-topic>``), in table order.

    An operation marked ¹ applies only when the worker creates its topics; a row whose purpose says
    "only with `--key-field`", "only with `event-log.level`" or "exactly-once only" only in that configuration.
    """
    start = _README.index("### Security: ACLs the worker needs")
    end = re.compile(r"^#{2,3} ", re.MULTILINE).search(_README, start + 1)
    section = _README[start:end.start() if end else len(_README)]
    acls = []
    for kind, name, operations, purpose in _ROW.findall(section):
        if ("only with `--key-field`" in purpose and not key_field) or \
                ("only with `event-log.level`" in purpose and not event_log) or \
                ("exactly-once only" in purpose and not exactly_once):
            continue
        for operation in (op.strip() for op in operations.split(",")):
            if operation.endswith("¹"):
                if not creates_topics:
                    continue
                operation = operation.removesuffix("¹")
            acls.append(Acl(kind, name, operation))
    assert acls, "README lists no ACLs"
    return acls


def fill(acl: Acl, names: Mapping[str, str]) -> Acl:
    """``acl`` with its placeholders replaced: ``<app-id>-state-changelog`` -> ``app-1a2b-state-changelog``."""
    return replace(acl, name=re.sub(r"<[a-z-]+>", lambda m: names[m.group(0)], acl.name))


def placeholders(settings: WorkerSettings) -> dict[str, str]:
    return {"<input-topic>": settings.input_topic, "<output-topic>": settings.output_topic,
            "<app-id>": settings.app_id, "<dlq-topic>": settings.dead_letter_topic,
            "<instance-id>": settings.instance_id}


@pytest.mark.parametrize("creates_topics", [False, True], ids=["operator-creates-topics", "worker-creates-topics"])
@pytest.mark.parametrize("key_field", [None, "id"])
@pytest.mark.parametrize("guarantee", list(ProcessingGuarantee))
@pytest.mark.parametrize("event_log", [False, True], ids=["no-event-log", "event-log"])
def test_readme_lists_exactly_what_the_worker_checks(creates_topics: bool, key_field: str | None,
                                                     guarantee: ProcessingGuarantee, event_log: bool):
    settings = WorkerSettings.load(env={}, agent=AGENT, input_topic="in", output_topic="out", app_id="app",
                                   instance_id=INSTANCE, key_field=key_field, processing_guarantee=guarantee)
    listed = [fill(acl, placeholders(settings)) for acl in
              readme_acls(creates_topics, key_field is not None, guarantee is ProcessingGuarantee.EXACTLY_ONCE,
                          event_log)]
    assert sorted(listed, key=str) == sorted(required_acls(settings, creates_topics, event_log), key=str)


@pytest.mark.parametrize("kwargs,complaint", [
    ({"authorizer": True}, "PLAINTEXT clients are anonymous"),
    ({"listener_protocol": "SASL_PLAINTEXT"}, "needs scram_users"),
    ({"listener_protocol": "SASL_PLAINTEXT", "scram_users": {"admin": 'pw"; x'}}, "letters, digits"),
    ({"listener_protocol": "SASL_SSL", "scram_users": {"admin": "pw"}}, "PLAINTEXT or SASL_PLAINTEXT"),
])
def test_the_launcher_refuses_security_settings_it_cannot_honour(kwargs: dict[str, Any], complaint: str):
    with pytest.raises(ValueError, match=complaint):
        ApacheKafka(**kwargs)


# -- the secured broker --------------------------------------------------------------------------------

@dataclass
class SecuredKafka:
    broker: ApacheKafka

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap_servers

    @property
    def admin_config(self) -> dict[str, Any]:
        """The super user's client settings (the broker's own SCRAM user)."""
        return {"bootstrap.servers": self.bootstrap, **self.broker.client_security()}

    def grant(self, acls: list[Acl]) -> None:
        """ALLOW each ACL to the worker's user; return once the broker's authorizer enforces all of them."""
        bindings = [AclBinding(_RESOURCE_TYPES[acl.resource_type], acl.name, ResourcePatternType.LITERAL,
                               f"User:{WORKER_USER}", "*", AclOperation[acl.operation], AclPermissionType.ALLOW)
                    for acl in acls]
        admin = AdminClient(self.admin_config)
        for future in admin.create_acls(bindings).values():
            future.result(timeout=ACL_VISIBLE_S)
        # The controller acknowledges once the ACLs are in the metadata log; the broker answers
        # DescribeAcls from its own authorizer, so seeing them there means they are enforced.
        wanted = {(b.restype, b.name, b.operation) for b in bindings}
        # None matches any resource name and host (the stubs say str, confluent-kafka takes None).
        everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY,  # type: ignore[arg-type]
                                      f"User:{WORKER_USER}", None, AclOperation.ANY,  # type: ignore[arg-type]
                                      AclPermissionType.ANY)

        def visible() -> bool:
            found = admin.describe_acls(everything).result(timeout=ACL_VISIBLE_S)
            return wanted <= {(b.restype, b.name, b.operation) for b in found}

        assert wait_for(visible, timeout_s=ACL_VISIBLE_S, interval_s=0.05), f"ACLs not visible: {acls}"


@pytest.fixture(scope="module")
def secured() -> Iterator[SecuredKafka]:
    try:
        check_requirements()
    except EmbeddedBrokerError as exc:
        pytest.skip(f"SASL and ACLs are tested on Apache Kafka: {exc}")
    broker = ApacheKafka(scram_users={"admin": ADMIN_PASSWORD, WORKER_USER: WORKER_PASSWORD},
                         listener_protocol="SASL_PLAINTEXT", authorizer=True)
    broker.start()
    try:
        yield SecuredKafka(broker)
    finally:
        broker.stop()


@dataclass
class Deployment:
    """One app's topics on the secured broker, with the settings naming them."""

    kafka: SecuredKafka
    settings: WorkerSettings
    creates_topics: bool

    @property
    def names(self) -> dict[str, str]:
        return placeholders(self.settings)

    @property
    def written_topics(self) -> list[str]:
        s = self.settings
        return [s.output_topic, s.changelog_topic, s.dead_letter_topic]

    def produce(self, records: list[tuple[str, str]]) -> None:
        producer = Producer({**self.kafka.admin_config, "linger.ms": 0})
        for key, value in records:
            producer.produce(self.settings.input_topic, value, key)
        assert producer.flush(30) == 0

    def read_to_end(self, topic: str) -> list[Message]:
        """Every committed record of ``topic`` (its writers have stopped), read up to its end."""
        consumer = Consumer({**self.kafka.admin_config, "group.id": f"reader-{uuid.uuid4().hex}",
                             "enable.auto.commit": False, "isolation.level": "read_committed",
                             "enable.partition.eof": True, "fetch.wait.max.ms": 10})
        try:
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
            records: list[Message] = []
            at_end: set[int] = set()
            deadline = time.monotonic() + 30
            while len(at_end) < PARTITIONS:
                assert time.monotonic() < deadline, f"{topic} not read to its end within 30 s"
                for message in consumer.consume(num_messages=500, timeout=0.2):
                    error = message.error()
                    if error is None:
                        records.append(message)
                    elif error.code() == KafkaError._PARTITION_EOF:
                        partition = message.partition()
                        assert partition is not None  # an end-of-partition event names its partition
                        at_end.add(partition)
                    else:
                        raise AssertionError(f"reading {topic}: {error}")
            return records
        finally:
            consumer.close()

    def untouched(self) -> None:
        """Nothing written to any topic that exists, and no input offset committed."""
        s = self.settings
        consumer = Consumer({**self.kafka.admin_config, "group.id": s.app_id, "enable.auto.commit": False})
        try:
            existing = consumer.list_topics(timeout=10).topics
            for topic in self.written_topics:
                if topic in existing:
                    ends = [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                            for p in range(PARTITIONS)]
                    assert ends == [0] * PARTITIONS, f"{topic} was written to: end offsets {ends}"
            committed = consumer.committed([TopicPartition(s.input_topic, p) for p in range(PARTITIONS)], timeout=10)
            assert all(tp.offset < 0 for tp in committed), f"input offsets committed: {committed}"
        finally:
            consumer.close()


@pytest.fixture()
def deploy(secured: SecuredKafka) -> Callable[[bool], Deployment]:
    """Fresh topics for one app: input and output always by the operator, the worker's own topics by
    the operator unless ``creates_topics``."""

    def make(creates_topics: bool) -> Deployment:
        tag = uuid.uuid4().hex[:8]
        settings = WorkerSettings.load(env={}, agent=AGENT, input_topic=f"acl-in-{tag}", output_topic=f"acl-out-{tag}",
                                       app_id=f"acl-app-{tag}", instance_id=INSTANCE)
        admin = TopicAdmin(secured.bootstrap, secured.broker.client_security(), timeout_s=15.0)
        admin.create_topic(settings.input_topic, PARTITIONS)
        admin.create_topic(settings.output_topic, PARTITIONS)
        if not creates_topics:
            admin.create_topic(settings.changelog_topic, PARTITIONS, {"cleanup.policy": "compact"})
            admin.create_topic(settings.dead_letter_topic, PARTITIONS)
        return Deployment(secured, settings, creates_topics)

    return make


@pytest.fixture()
def start_worker(secured: SecuredKafka, tmp_path: Path) -> Iterator[Callable[[Deployment], WorkerProcess]]:
    """The worker as user ``worker``: SASL settings as flags, the password from the environment (a secret)."""
    started: list[WorkerProcess] = []

    def start(deployment: Deployment) -> WorkerProcess:
        s = deployment.settings
        worker = WorkerProcess(secured.bootstrap, AGENT, s.input_topic, s.output_topic, s.app_id,
                               tmp_path / f"state-{s.app_id}", INSTANCE, tmp_path,
                               env={"AGENTFLEET_KAFKA_SASL_PASSWORD": WORKER_PASSWORD},
                               extra_args=["-X", "security.protocol=SASL_PLAINTEXT",
                                           "-X", "sasl.mechanism=SCRAM-SHA-256", "-X", f"sasl.username={WORKER_USER}"])
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        if worker.running():
            worker.kill()


# -- the worker under exactly README's ACLs -------------------------------------------------------------

@pytest.mark.parametrize("creates_topics", [False, True], ids=["operator-creates-topics", "worker-creates-topics"])
def test_the_readme_acls_are_enough_for_exactly_once(deploy, start_worker, creates_topics: bool):
    deployment = deploy(creates_topics)
    s = deployment.settings
    deployment.kafka.grant([fill(acl, deployment.names) for acl in readme_acls(creates_topics)])
    worker = start_worker(deployment)
    worker.wait_ready(timeout_s=60, min_partitions=PARTITIONS)

    deployment.produce([(f"k{n}", json.dumps({"n": n})) for n in range(RECORDS)]
                       + [("poison", json.dumps({"poison": True})), ("garbage", "{not json")])
    assert wait_for(lambda: worker.metric("agentfleet_records_out_total") >= RECORDS
                    and worker.metric("agentfleet_dlq_records_total") >= 2, timeout_s=60), worker.log()
    endpoints = {path: worker.http(path) for path in ("/metrics", "/healthz", "/readyz")}
    assert worker.terminate() == 0, worker.log()

    outputs = sorted(json.loads(m.value())["n"] for m in deployment.read_to_end(s.output_topic))
    assert outputs == list(range(RECORDS)), "each input's output exactly once"
    dead = deployment.read_to_end(s.dead_letter_topic)
    assert sorted(m.key() for m in dead) == [b"garbage", b"poison"]
    assert deployment.read_to_end(s.changelog_topic), "state was written to the changelog"

    log = worker.log_path.read_text(errors="replace")
    assert "'sasl.password': '***'" in log  # the password was configured, and shown redacted
    for place, text in {"worker log": log, **{path: body for path, (_status, body) in endpoints.items()}}.items():
        assert WORKER_PASSWORD not in text, f"the worker's password leaked into {place}"
        assert ADMIN_PASSWORD not in text, f"the admin password leaked into {place}"
    assert endpoints["/metrics"][0] == 200 and "agentfleet_records_out_total" in endpoints["/metrics"][1]


# Every ACL of the table with topics created by an operator, then the CREATEs the worker needs to make its own.
_REMOVALS = [(False, acl) for acl in readme_acls(creates_topics=False)] + \
            [(True, acl) for acl in readme_acls(creates_topics=True) if acl.operation == "CREATE"]


@pytest.mark.parametrize("creates_topics,removed", _REMOVALS,
                         ids=[f"{'worker' if c else 'operator'}-creates-topics:{acl}" for c, acl in _REMOVALS])
def test_without_any_one_acl_the_worker_fails_fast_naming_it(deploy, start_worker, creates_topics: bool,
                                                            removed: Acl):
    deployment = deploy(creates_topics)
    missing = fill(removed, deployment.names)
    deployment.kafka.grant([fill(acl, deployment.names) for acl in readme_acls(creates_topics) if acl != removed])
    deployment.produce([("k", json.dumps({"n": 1}))])  # work it must not do

    started = time.monotonic()
    worker = start_worker(deployment)
    assert worker.proc is not None
    code = worker.proc.wait(timeout=FAIL_FAST_S)  # raises TimeoutExpired if it does not fail fast
    took = time.monotonic() - started
    log = worker.log_path.read_text(errors="replace")

    expected = (f"kafka ACL: user {WORKER_USER} may not {missing.operation} {missing.resource_type} {missing.name} "
                f"({_REFUSED[missing.resource_type]})")
    assert code == 2, log
    assert [line.split("error: ", 1)[-1] for line in log.splitlines() if "kafka ACL:" in line] == \
        [expected], log  # one line, naming exactly the missing ACL, the way the CLI reports misconfiguration
    assert took < FAIL_FAST_S
    deployment.untouched()
    assert WORKER_PASSWORD not in log and ADMIN_PASSWORD not in log
