"""Two workers on a 3-node Apache Kafka cluster through a broker crash and a rolling restart, under load.

Every topic is replicated three times with min.insync.replicas=2, so one node may be down at any time
without stopping writes: the input and output topics created here, the changelog and dead-letter
topics the workers create (the broker's default replication factor), the group's offsets and the
transaction log. The checks are the chaos run's (tests/worker/integration/chaos.py): nothing lost,
nothing committed twice, per-key order and counts. The embedded Tansu broker is a single node.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from agentplan.testing.llm_stub import StubLLMServer
from tests.kafka_support import KafkaCluster
from tests.worker.integration.chaos import CallLedger, ChaosConfig, Fleet, analyse
from tests.worker.integration.harness import TopicTail, wait_for
from tests.worker.integration.topic_probe import replication_factor, under_replicated_partitions
from worker.kafka.apache import ApacheKafka

pytestmark = pytest.mark.integration

PARTITIONS = 6
KEYS = 60
ROUND_S = 1.0  # one record per key per round: 60 records/s
THREE_NODES = {
    # Writes need two in-sync replicas: one node down is tolerated, data is never on one node only.
    "min.insync.replicas": "2",
    # A crashed node is fenced (its leaderships move) 3 s after its last heartbeat instead of 9 s.
    "broker.heartbeat.interval.ms": "500",
    "broker.session.timeout.ms": "3000",
}
REPLICATED = {"min.insync.replicas": "2"}
# Three JVMs starting at once on a busy 2-core machine have taken over a minute.
START_TIMEOUT_S = 180.0


@pytest.fixture(scope="module")
def cluster(kafka: KafkaCluster) -> Iterator[KafkaCluster]:
    """A 3-node cluster of its own (~15 s to start); the session broker only tells whether Java is here."""
    if not kafka.hides_aborted:
        pytest.skip("the session broker is the embedded Tansu (no Java 17 + Maven for Apache Kafka)")
    broker = ApacheKafka(nodes=3, properties=THREE_NODES).start(timeout_s=START_TIMEOUT_S)
    three = KafkaCluster(broker.bootstrap_servers, "apache-kafka-3-nodes", hides_aborted=True, stop=broker.stop,
                         apache=broker)
    try:
        yield three
    finally:
        three.close()


class RoundsProducer(threading.Thread):
    """Input for the CountingAgent at a steady rate until :meth:`finish`: round r is ``{"key", "seq": r}``
    for every key, so whole rounds are produced and the chaos analysis knows every expected output."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(name="rounds-producer", daemon=True)
        self.topic = topic
        # Idempotent and patient: retried sends keep their order and outlast a leader moving.
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True,
                                  "message.timeout.ms": 120_000})
        self.rounds = 0
        self.error: BaseException | None = None
        self._finish = threading.Event()

    def run(self) -> None:
        try:
            while not self._finish.is_set():
                for i in range(KEYS):
                    value = json.dumps({"key": f"k{i}", "seq": self.rounds})
                    self.producer.produce(self.topic, key=f"k{i}", value=value)
                self.rounds += 1
                self.producer.poll(0)
                self._finish.wait(ROUND_S)  # pacing; finish() ends it early
            if self.producer.flush(120):
                raise RuntimeError("input not delivered within 120s")
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.error = exc

    def finish(self) -> int:
        """Stop after the current round; returns the number of records produced."""
        self.stop()
        self.join(150)
        assert self.error is None and not self.is_alive(), self.error
        return self.rounds * KEYS

    def stop(self) -> None:
        self._finish.set()


def _progress(outputs: TopicTail, more: int, timeout_s: float = 60) -> bool:
    """Wait until ``more`` outputs arrived after now: the workers commit."""
    target = len(outputs) + more
    return wait_for(lambda: len(outputs) >= target, timeout_s)


def _fully_replicated(cluster: KafkaCluster, timeout_s: float = 90) -> None:
    assert wait_for(lambda: under_replicated_partitions(cluster.admin.client) == 0, timeout_s, 0.2), \
        f"partitions still under-replicated after {timeout_s}s"


def _group_coordinator(cluster: KafkaCluster, group: str) -> int:
    """Index (0-2) of the node coordinating ``group``: its loss also moves the group and its offsets."""
    description = cluster.admin.client.describe_consumer_groups([group])[group].result(timeout=15)
    return int(description.coordinator.id) - 1


def test_workers_ride_out_a_broker_crash_and_a_rolling_restart(cluster: KafkaCluster, app_id: str, tmp_path: Path,
                                                               record_property: Callable[..., None]):
    started = time.monotonic()
    apache = cluster.apache
    assert isinstance(apache, ApacheKafka)
    bootstrap = cluster.bootstrap_servers
    input_topic, output_topic = f"cluster-in-{app_id}", f"cluster-out-{app_id}"
    for topic in (input_topic, output_topic):
        cluster.admin.create_topic(topic, PARTITIONS, REPLICATED, replication_factor=3)
    ledger = CallLedger()
    with StubLLMServer(responder=ledger, latency_ms=20) as stub:
        fleet = Fleet(bootstrap, input_topic, output_topic, app_id, tmp_path,
                      {"OPENAI_BASE_URL": stub.base_url, "OPENAI_API_KEY": "test"})
        outputs = TopicTail(bootstrap, output_topic, PARTITIONS).start()
        producer = RoundsProducer(bootstrap, input_topic)

        def logs() -> str:
            return "\n".join(incarnation.process.log() for incarnation in fleet.incarnations)

        try:
            for instance in ("w1", "w2"):  # one by one: the first creates the changelog and dead-letter topics
                fleet.start(instance).process.wait_ready(timeout_s=90)
            assert fleet.wait_settled(PARTITIONS, 60) is not None
            producer.start()
            assert _progress(outputs, 2 * KEYS), logs()

            crashed = _group_coordinator(cluster, app_id)
            apache.kill_node(crashed)
            killed = time.monotonic()
            # The controller fences the dead node and shrinks the ISRs; the workers go on without it (a
            # commit that librdkafka keeps blocked on the dead coordinator is cut loose after
            # transaction.timeout.ms, see Worker._stuck_close).
            assert wait_for(lambda: (under_replicated_partitions(cluster.admin.client) or 0) > 0, 30, 0.2)
            assert _progress(outputs, 2 * KEYS), logs()
            record_property("crash_to_progress_s", round(time.monotonic() - killed, 1))
            apache.start_node(crashed, START_TIMEOUT_S)
            _fully_replicated(cluster)

            # Rolling restart of the other two: one at a time, each back in every ISR before the next goes.
            # With the crash, every node has been down once.
            for node in (n for n in range(3) if n != crashed):
                apache.stop_node(node)
                assert _progress(outputs, KEYS), logs()
                apache.start_node(node, START_TIMEOUT_S)
                _fully_replicated(cluster)

            records = producer.finish()
            config = ChaosConfig(partitions=PARTITIONS, records=records, keys=KEYS, workers=2, schedule=[])
            assert wait_for(lambda: len(outputs) >= records, 120), logs()
            # The workers stayed up through all of it: the same two processes, never exited.
            assert [i.process.running() for i in fleet.incarnations] == [True, True], logs()
            fleet.stop_all()
            assert outputs.wait_caught_up()
        finally:
            producer.stop()
            fleet.kill_all()
            committed = outputs.stop()
    record_property("cluster_test_s", round(time.monotonic() - started, 1))

    for incarnation in fleet.incarnations:
        incarnation.read_log()
    report = analyse(config, committed, fleet.incarnations, [], ledger, hides_aborted=True, app_id=app_id)
    for figure in ("lost", "duplicates", "order_violations", "count_violations", "unexpected_outputs",
                   "repeated_committed_llm_calls"):
        assert report[figure] == 0, (figure, report)
    assert [i.exit_code for i in fleet.incarnations] == [0, 0]

    # The topics the workers created are replicated like the rest.
    for topic in (f"{app_id}-state-changelog", f"{input_topic}-dlq"):
        assert replication_factor(cluster.admin.client, topic) == 3, topic

    # Each worker's log shows the crashed node's outage (librdkafka reports every lost connection).
    crashed_address = re.escape(apache.node_bootstrap(crashed))
    for incarnation in fleet.incarnations:
        log = incarnation.process.log_path.read_text(errors="replace")
        assert re.search(rf"{crashed_address}/{crashed + 1}: .*(Disconnected|Connection refused)", log), log[-3000:]
