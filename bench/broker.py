"""The one place a benchmark chooses and starts its broker: Apache Kafka (the default) or Tansu.

``--broker kafka`` is Apache Kafka in KRaft combined mode (worker/kafka/apache.py), what a deployment
runs; it needs Java 17+ and Maven (for the jars' first download). ``--broker tansu`` is the embedded
broker: no JVM, but it hands aborted transactional records to read_committed readers (BROKER.md), so
the chaos analysis has to excuse those, and its figures do not carry over to Apache Kafka.
Every result file names the broker through :func:`broker_info`.
"""

from __future__ import annotations

import argparse
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from worker.config import WorkerSettings
from worker.exceptions import EmbeddedBrokerError
from worker.kafka.apache import KAFKA_VERSION, ApacheKafka, BrokerRequirementError, check_requirements
from worker.kafka.embedded import EmbeddedBroker, tansu_binary

__all__ = ["BROKERS", "JIT_MODES", "BenchBroker", "add_broker_argument", "broker_info", "require_broker",
           "start_broker", "topic_settings", "worker_group_protocol"]

BROKERS = ("kafka", "tansu")
DEFAULT_BROKER = "kafka"
# With three nodes a write needs two replicas: one node may be down without losing an acknowledged record.
_MIN_INSYNC_REPLICAS = 2
# A deadline, not a wait: three JVMs starting at once on a busy 2-core machine have taken over a minute.
START_TIMEOUT_S = 180.0
# How the bench broker's JVM compiles its hot paths. A bench broker lives one scenario (about a minute),
# and there the JIT was the largest single cost: in S3 at 200 ms / 1,024 in flight, after the 20 s
# warm-up, HotSpot's C2 compiler threads used ~45% of the broker's CPU (JFR: 8,800 compilations in
# 64 s), and even a 90 s warm-up left 0.86 ms of broker CPU per record. With C1 alone the broker
# compiles in a fraction of that and settled at 0.41-0.57 ms. A production broker runs for days, its
# compilation long finished, so "c1" is the nearer stand-in for it; "tiered" is HotSpot's default.
JIT_MODES = {"c1": ("-XX:TieredStopAtLevel=1",), "tiered": ()}
DEFAULT_JIT = "c1"


def add_broker_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", choices=BROKERS, default=DEFAULT_BROKER,
                        help=f"kafka: Apache Kafka {KAFKA_VERSION} in KRaft mode (needs Java 17+ and Maven); "
                             "tansu: the embedded broker (needs neither; read_committed readers see aborted records)")


def require_broker(engine: str) -> None:
    """Exit with one line naming what is missing, before anything starts, when ``engine`` cannot run here."""
    if engine != "kafka":
        return
    try:
        check_requirements()
    except BrokerRequirementError as exc:
        # The launcher names the CLI's --engine option; benchmarks call the same choice --broker.
        raise SystemExit(str(exc).replace("--engine", "--broker")) from None


def _tansu_version() -> str:
    try:
        out = subprocess.run([str(tansu_binary()), "--version"], capture_output=True, text=True, timeout=10,
                             check=False, stdin=subprocess.DEVNULL).stdout.split()
    except (OSError, subprocess.TimeoutExpired, EmbeddedBrokerError):
        return "unknown"
    return out[-1] if out else "unknown"  # "tansu 0.6.0"


def worker_group_protocol(value: str | None = None) -> str:
    """The consumer group protocol the workers run with, as results name it.

    ``value`` is what the run passes to its workers; None means the worker's default, which the
    benchmarks leave alone. Workers without a group-protocol setting are classic members.
    """
    if value is None:
        field = WorkerSettings.model_fields.get("group_protocol")
        value = str(getattr(field.default, "value", field.default)) if field is not None else "classic"
    return "classic (cooperative-sticky)" if value == "classic" else f"{value} (KIP-848)"


def broker_info(engine: str, nodes: int = 1, group_protocol: str | None = None,
                jit: str = DEFAULT_JIT) -> dict[str, Any]:
    """What result files record about the broker (nothing here needs it running)."""
    if engine == "kafka":
        version = KAFKA_VERSION
        compiler = "C1-only JIT" if jit == "c1" else "tiered JIT"
        description = f"Apache Kafka {version} (KRaft, {nodes} node{'s' if nodes > 1 else ''}, {compiler})"
    else:
        version = _tansu_version()
        description = f"Tansu {version} (embedded)"
    return {"engine": engine, "version": version, "nodes": nodes, "description": description,
            "jvm_options": list(JIT_MODES[jit]) if engine == "kafka" else [],
            "hides_aborted": engine == "kafka", "group_protocol": worker_group_protocol(group_protocol)}


def topic_settings(nodes: int) -> tuple[int, dict[str, str]]:
    """Replication factor and configs for the topics a benchmark creates on a cluster of ``nodes``."""
    if nodes == 1:
        return 1, {}
    return 3, {"min.insync.replicas": str(_MIN_INSYNC_REPLICAS)}


@dataclass
class BenchBroker:
    """A started broker: its address, what results say about it, and (Apache Kafka) node control."""

    engine: str
    nodes: int
    server: ApacheKafka | EmbeddedBroker
    jit: str = DEFAULT_JIT

    @property
    def bootstrap_servers(self) -> str:
        return self.server.bootstrap_servers

    @property
    def hides_aborted(self) -> bool:
        """True when read_committed readers never see aborted records (Apache Kafka): nothing is excused."""
        return self.engine == "kafka"

    @property
    def cluster(self) -> ApacheKafka:
        """The Apache Kafka launcher, for kill_node/start_node; Tansu is one process and has no nodes."""
        if not isinstance(self.server, ApacheKafka):
            raise EmbeddedBrokerError("node control needs --broker kafka")
        return self.server

    @property
    def pids(self) -> list[int]:
        """The broker's running processes: one per Apache Kafka node, Tansu's one."""
        if isinstance(self.server, ApacheKafka):
            return [pid for pid in self.server.pids if pid is not None]
        return [self.server.pid] if self.server.pid is not None else []

    def info(self, group_protocol: str | None = None) -> dict[str, Any]:
        return broker_info(self.engine, self.nodes, group_protocol, self.jit)

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> BenchBroker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def start_broker(engine: str = DEFAULT_BROKER, nodes: int = 1, data_dir: Path | None = None,
                 jit: str = DEFAULT_JIT) -> BenchBroker:
    """Start a fresh broker on 127.0.0.1; stop it with :meth:`BenchBroker.stop` (or ``with``).

    ``data_dir`` (Apache Kafka): where the nodes keep their logs and data, left in place after stop
    for a post-mortem; by default a temporary directory, removed on stop. ``jit``: a :data:`JIT_MODES` key.
    """
    if engine not in BROKERS:
        raise ValueError(f"broker must be one of {BROKERS}, got {engine!r}")
    if jit not in JIT_MODES:
        raise ValueError(f"broker JIT must be one of {tuple(JIT_MODES)}, got {jit!r}")
    if engine == "tansu":
        if nodes != 1:
            raise ValueError("--broker tansu is a single process: --nodes 1 only")
        return BenchBroker(engine, nodes, EmbeddedBroker().start())
    # min.insync.replicas as a broker default reaches the topics the workers create (changelog, DLQ) too.
    _replicas, configs = topic_settings(nodes)
    if nodes > 1:
        # As in tests/worker/integration/test_cluster_failures.py: a crashed node's leaderships move 3 s
        # after its last heartbeat instead of Kafka's default 9 s (broker.session.timeout.ms).
        configs = {**configs, "broker.heartbeat.interval.ms": "500", "broker.session.timeout.ms": "3000"}
    cluster = ApacheKafka(nodes=nodes, data_dir=data_dir, properties=configs, jvm_options=JIT_MODES[jit])
    return BenchBroker(engine, nodes, cluster.start(timeout_s=START_TIMEOUT_S), jit)
