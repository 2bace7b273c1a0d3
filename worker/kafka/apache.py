"""Apache Kafka in KRaft combined mode on 127.0.0.1, started from Maven Central's jars.

Why this is ours to write: no library starts an Apache Kafka broker from Python without Docker.
The jars are resolved by Maven (``resources/kafka-broker-pom.xml``, versions pinned) into a cache
(``$AGENTFLEET_CACHE`` or ``~/.cache/agentfleet``, then ``kafka-<version>/libs``); each node is a
``java kafka.Kafka server.properties`` child process of ours, stopped by pid.

Settings that matter for tests and demos are set here and documented in README "Brokers":
replication of the internal topics follows the node count, ``group.initial.rebalance.delay.ms=0``
(no 3 s wait before the first rebalance), a log cleaner that wakes every second and compacts any
dirty log (so a topic with a small ``segment.ms`` is compacted within seconds), a 1 s scan for timed
out transactions, and KIP-848 session bounds low enough for a 6 s session as in the classic protocol.
"""

from __future__ import annotations

import base64
import fcntl
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from worker.exceptions import EmbeddedBrokerError
from worker.kafka.embedded import free_port
from worker.kafka.foreground import run_until_signal

__all__ = [
    "KAFKA_VERSION",
    "ApacheKafka",
    "BrokerRequirementError",
    "check_requirements",
    "jars_cached",
    "ensure_jars",
    "run_foreground",
]

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.4.0"
_RESOURCES = Path(__file__).resolve().parent / "resources"
_POM = _RESOURCES / "kafka-broker-pom.xml"
_LOG4J = _RESOURCES / "kafka-log4j2.properties"
_START_TIMEOUT_S = 60.0
_STOP_GRACE_S = 20.0
_LOG_TAIL_BYTES = 4000
_HEAP = "-Xmx768m"
_SCRAM_VALUE = re.compile(r"[A-Za-z0-9_.-]+")


class BrokerRequirementError(EmbeddedBrokerError):
    """Java >= 17 or Maven is missing, so Apache Kafka cannot be started here."""


def _java_major(java: str) -> int | None:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match is None:
        return None
    major = int(match.group(1))
    # Java 8 and older say "1.8.0_…".
    return int(match.group(2) or 0) if major == 1 else major


def jars_cached(version: str = KAFKA_VERSION) -> bool:
    return (cache_root() / f"kafka-{version}" / "libs" / "COMPLETE").is_file()


def check_requirements(need_maven: bool | None = None) -> str:
    """Return the java executable, or raise naming exactly what is missing.

    Maven is needed only while the jars are not cached yet (``need_maven=None`` asks the cache).
    """
    if need_maven is None:
        need_maven = not jars_cached()
    missing: list[str] = []
    java = shutil.which("java")
    if java is None:
        missing.append("Java 17 or newer (no `java` on PATH)")
    else:
        major = _java_major(java)
        if major is None or major < 17:
            missing.append(f"Java 17 or newer ({java} is Java {major or 'of unknown version'})")
    if need_maven and shutil.which("mvn") is None:
        missing.append("Maven (no `mvn` on PATH; it fetches the broker's jars from Maven Central once)")
    if missing:
        raise BrokerRequirementError(
            "--engine kafka needs " + " and ".join(missing) + "; --engine tansu needs neither")
    assert java is not None
    return java


def cache_root() -> Path:
    configured = os.environ.get("AGENTFLEET_CACHE", "").strip()
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "agentfleet"


def ensure_jars(version: str = KAFKA_VERSION) -> Path:
    """The directory of the broker's jars, resolved through Maven on first use.

    Resolution goes to a temporary directory renamed into place, under a file lock, so an
    interrupted or concurrent first start never leaves a half-filled cache behind.
    """
    home = cache_root() / f"kafka-{version}"
    libs = home / "libs"
    if jars_cached(version):
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (libs / "COMPLETE").is_file():
            return libs
        check_requirements(need_maven=True)
        staging = Path(tempfile.mkdtemp(prefix="libs-", dir=home))
        command = ["mvn", "-q", "-B", "-f", str(_POM), "dependency:copy-dependencies",
                   f"-DoutputDirectory={staging}", "-DincludeScope=runtime", f"-Dkafka.version={version}"]
        logger.info("fetching Apache Kafka %s jars from Maven Central into %s", version, libs)
        result = subprocess.run(command, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
        if result.returncode != 0 or not any(staging.glob(f"kafka_2.13-{version}.jar")):
            shutil.rmtree(staging, ignore_errors=True)
            tail = (result.stdout + result.stderr).strip()[-_LOG_TAIL_BYTES:]
            raise EmbeddedBrokerError(f"mvn could not fetch Apache Kafka {version} (exit {result.returncode}):\n{tail}")
        (staging / "COMPLETE").write_text(version)
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
    return libs


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (Kafka's Uuid format)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


@dataclass
class _Node:
    node_id: int
    port: int
    controller_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class ApacheKafka:
    """One to three KRaft combined-mode nodes (broker and controller in one JVM each) on 127.0.0.1.

    ``port`` is the first node's client port (the next nodes take the following ports); without it,
    free ports are picked. ``properties`` are added to (or override) every node's server.properties.

    ``listener_protocol="SASL_PLAINTEXT"`` authenticates clients with SCRAM-SHA-256: ``scram_users``
    (name -> password) are written into the metadata log at format time, and the first of them is
    the broker's own identity on the client listener, which is also the inter-broker listener.
    ``authorizer=True`` turns on the StandardAuthorizer: resources without ACLs are closed, and only
    that first user (plus the controller listener's principal, see :meth:`_security_properties`)
    is a super user.
    """

    nodes: int = 1
    port: int | None = None
    data_dir: Path | None = None
    version: str = KAFKA_VERSION
    host: str = "127.0.0.1"
    properties: Mapping[str, str] = field(default_factory=dict)
    scram_users: Mapping[str, str] = field(default_factory=dict)
    listener_protocol: str = "PLAINTEXT"
    authorizer: bool = False
    # Added after the launcher's own JVM options (a later -XX option wins), e.g. JIT settings.
    jvm_options: tuple[str, ...] = ()
    _nodes: list[_Node] = field(default_factory=list, init=False, repr=False)
    _owns_data_dir: bool = field(default=False, init=False, repr=False)
    _libs: Path | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.nodes not in (1, 3):
            raise ValueError(f"--nodes must be 1 or 3, got {self.nodes}")
        if self.listener_protocol not in ("PLAINTEXT", "SASL_PLAINTEXT"):
            raise ValueError(f"listener_protocol must be PLAINTEXT or SASL_PLAINTEXT, got {self.listener_protocol!r}")
        if self.listener_protocol == "SASL_PLAINTEXT" and not self.scram_users:
            raise ValueError("listener_protocol SASL_PLAINTEXT needs scram_users: the first one is the broker's own")
        if self.authorizer and self.listener_protocol == "PLAINTEXT":
            # Every PLAINTEXT client is User:ANONYMOUS, which has to be a super user (see below).
            raise ValueError("authorizer=True needs listener_protocol SASL_PLAINTEXT: PLAINTEXT clients are anonymous")
        for name, password in self.scram_users.items():
            # Both end up unquoted in `kafka-storage format --add-scram` and quoted in a JAAS line.
            if not _SCRAM_VALUE.fullmatch(name) or not _SCRAM_VALUE.fullmatch(password):
                raise ValueError(f"SCRAM user {name!r}: names and passwords may only use letters, digits and -_.")

    # -- properties -------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        if not self._nodes:
            raise EmbeddedBrokerError("Apache Kafka has not been started: call start() first")
        return ",".join(f"{self.host}:{node.port}" for node in self._nodes)

    @property
    def pids(self) -> list[int | None]:
        return [node.process.pid if node.running() and node.process else None for node in self._nodes]

    def node_bootstrap(self, index: int) -> str:
        return f"{self.host}:{self._nodes[index].port}"

    def log_path(self, index: int = 0) -> Path:
        return self._nodes[index].log_path

    def is_running(self) -> bool:
        return bool(self._nodes) and all(node.running() for node in self._nodes)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, timeout_s: float = _START_TIMEOUT_S) -> ApacheKafka:
        """Fetch the jars if needed, format each node's log directory, start the JVMs, wait until ready."""
        with self._lock:
            if self.is_running():
                return self
            java = check_requirements(need_maven=not jars_cached(self.version))
            self._libs = ensure_jars(self.version)  # the first start's download is not part of the deadline
            deadline = time.monotonic() + timeout_s
            self._prepare_nodes()
            try:
                cluster_id = new_cluster_id()
                for node in self._nodes:
                    self._format(java, node, cluster_id)
                for node in self._nodes:
                    self._spawn(java, node)
                self._wait_ready(deadline, timeout_s)
            except BaseException:
                self._stop_all(signal.SIGKILL)
                self._cleanup()
                raise
            logger.info("Apache Kafka %s ready on %s (pids %s)", self.version, self.bootstrap_servers, self.pids)
            return self

    def stop(self) -> None:
        """SIGTERM every node (a controlled shutdown), SIGKILL whatever outlives the grace period."""
        with self._lock:
            self._stop_all(signal.SIGTERM)
            self._cleanup()

    def kill_node(self, index: int) -> None:
        """SIGKILL one node and wait for it to die: a crashed broker, for failure tests."""
        self._stop_node(self._nodes[index], signal.SIGKILL)

    def stop_node(self, index: int) -> None:
        """SIGTERM one node (controlled shutdown) and wait for it to exit."""
        self._stop_node(self._nodes[index], signal.SIGTERM)

    def start_node(self, index: int, timeout_s: float = _START_TIMEOUT_S) -> None:
        """Start a stopped node again on its old directory and ports; return once it serves metadata."""
        assert self._libs is not None
        java = check_requirements(need_maven=False)
        node = self._nodes[index]
        self._spawn(java, node)
        self._wait_ready(time.monotonic() + timeout_s, timeout_s, nodes=[node])

    def __enter__(self) -> ApacheKafka:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------------

    def _prepare_nodes(self) -> None:
        if self.data_dir is None:
            root = Path(tempfile.mkdtemp(prefix="agentfleet-kafka-"))
            self._owns_data_dir = True
        else:
            root = Path(self.data_dir)
            root.mkdir(parents=True, exist_ok=True)
        self.data_dir = root
        self._nodes = []
        for index in range(self.nodes):
            port = self.port + index if self.port is not None else free_port(self.host)
            directory = root / f"node-{index + 1}"
            directory.mkdir(parents=True, exist_ok=True)
            self._nodes.append(_Node(index + 1, port, free_port(self.host), directory))

    def server_properties(self, node: _Node) -> dict[str, str]:
        replicas = str(min(3, self.nodes))
        min_isr = str(min(2, self.nodes))
        voters = ",".join(f"{n.node_id}@{self.host}:{n.controller_port}" for n in self._nodes)
        props = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"CLIENT://{self.host}:{node.port},CONTROLLER://{self.host}:{node.controller_port}",
            "advertised.listeners": f"CLIENT://{self.host}:{node.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "CLIENT",
            "listener.security.protocol.map": f"CLIENT:{self.listener_protocol},CONTROLLER:PLAINTEXT",
            "log.dirs": str(node.directory / "data"),
            # Internal topics replicated like a production cluster of this size.
            "offsets.topic.replication.factor": replicas,
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "transaction.state.log.num.partitions": "10",
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
            "default.replication.factor": replicas,
            # Tests and demos: no 3 s hold on a new group's first rebalance.
            "group.initial.rebalance.delay.ms": "0",
            # KIP-848 groups: allow the 6 s session (and 1 s heartbeat) that classic groups use here.
            "group.consumer.min.session.timeout.ms": "6000",
            "group.consumer.session.timeout.ms": "10000",
            "group.consumer.min.heartbeat.interval.ms": "1000",
            "group.consumer.heartbeat.interval.ms": "1000",
            # The cleaner wakes every second and compacts any log with dirty records.
            "log.cleaner.backoff.ms": "1000",
            "log.cleaner.min.cleanable.ratio": "0.01",
            "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
            # Hung transactions are found within a second of transaction.timeout.ms.
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
            "log.retention.check.interval.ms": "1000",
            "num.partitions": "1",
            # A typo in a topic name must fail, not create a topic: the worker and the CLI create topics explicitly.
            "auto.create.topics.enable": "false",
        }
        props.update(self._security_properties())
        props.update(self.properties)
        return props

    def _security_properties(self) -> dict[str, str]:
        """SCRAM on the client listener and, with ``authorizer``, ACLs enforced by the StandardAuthorizer."""
        props: dict[str, str] = {}
        if self.listener_protocol == "SASL_PLAINTEXT":
            user, password = next(iter(self.scram_users.items()))
            props.update({
                "sasl.enabled.mechanisms": "SCRAM-SHA-256",
                # The client listener is the inter-broker listener, so the broker logs in to it too.
                "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-256",
                "listener.name.client.scram-sha-256.sasl.jaas.config":
                    "org.apache.kafka.common.security.scram.ScramLoginModule required "
                    f'username="{user}" password="{password}";',
            })
        if self.authorizer:
            user = next(iter(self.scram_users))
            # The controller listener stays PLAINTEXT (SCRAM credentials live in the metadata log the
            # controllers serve; KIP-900 gives them to brokers), so a broker reaches the controller as
            # User:ANONYMOUS and needs CLUSTER_ACTION there: without it no broker registers (measured).
            # Clients on the SCRAM listener are always authenticated, so none of them is ANONYMOUS.
            props.update({
                "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                "allow.everyone.if.no.acl.found": "false",
                "super.users": f"User:{user};User:ANONYMOUS",
            })
        return props

    def _write_properties(self, node: _Node) -> Path:
        path = node.directory / "server.properties"
        text = "".join(f"{key}={value}\n" for key, value in self.server_properties(node).items())
        path.write_text(text, encoding="utf-8")
        return path

    def _java_command(self, java: str, main: str, *args: str) -> list[str]:
        assert self._libs is not None
        return [java, _HEAP, "-XX:+UseG1GC", "-Djava.awt.headless=true", *self.jvm_options,
                f"-Dlog4j2.configurationFile={_LOG4J}", "-cp", f"{self._libs}/*", main, *args]

    def _format(self, java: str, node: _Node, cluster_id: str) -> None:
        config = self._write_properties(node)
        if (node.directory / "data" / "meta.properties").is_file():
            return  # --data-dir reused: the node keeps its cluster id and data
        # "=" form: a cluster id may start with "-", which would read as an option.
        args = ["format", f"--cluster-id={cluster_id}", "-c", str(config), "--ignore-formatted"]
        for user, password in self.scram_users.items():
            args += ["--add-scram", f"SCRAM-SHA-256=[name={user},password={password}]"]
        result = subprocess.run(self._java_command(java, "kafka.tools.StorageTool", *args),
                                capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise EmbeddedBrokerError(f"formatting {node.directory} failed:\n{(result.stdout + result.stderr)[-2000:]}")

    def _spawn(self, java: str, node: _Node) -> None:
        config = self._write_properties(node)
        node.log_file = open(node.log_path, "ab")  # noqa: SIM115 - closed when the node stops
        node.process = subprocess.Popen(
            self._java_command(java, "kafka.Kafka", str(config)),
            stdin=subprocess.DEVNULL, stdout=node.log_file, stderr=subprocess.STDOUT, cwd=node.directory,
            # Own process group: a terminal's Ctrl-C reaches us only, and we stop the JVMs in order.
            start_new_session=True)
        logger.debug("Apache Kafka node %s: pid %s, port %s", node.node_id, node.process.pid, node.port)

    def _wait_ready(self, deadline: float, timeout_s: float, nodes: list[_Node] | None = None) -> None:
        """Ready when every node answers metadata and the cluster lists all nodes as brokers.

        There is no readiness signal on a pipe, so this polls; each pause waits on the first
        node's process, so a JVM that dies during start is noticed at once.
        """
        watched = nodes or self._nodes
        def admin_config(port: int) -> dict[str, Any]:
            return {"bootstrap.servers": f"{self.host}:{port}", "socket.connection.setup.timeout.ms": 2000,
                    "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 200, "logger": logger,
                    **self.client_security()}

        admins = {node.node_id: AdminClient(admin_config(node.port)) for node in watched}
        pending = set(admins)
        while pending:
            for node in watched:
                if not node.running():
                    code = node.process.returncode if node.process else None
                    raise EmbeddedBrokerError(
                        f"Apache Kafka node {node.node_id} exited with code {code} during start{self._tail(node)}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EmbeddedBrokerError(f"Apache Kafka not ready on {self.bootstrap_servers} after "
                                          f"{timeout_s:g}s{self._tail(watched[0])}")
            for node_id in sorted(pending):
                try:
                    metadata = admins[node_id].list_topics(timeout=min(2.0, max(remaining, 0.1)))
                except KafkaException:
                    continue
                if len(metadata.brokers) >= self.nodes:
                    pending.discard(node_id)
            if pending:
                process = watched[0].process
                assert process is not None
                try:
                    process.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    pass

    def client_security(self) -> dict[str, str]:
        """Client settings that reach this cluster's listener (empty for PLAINTEXT)."""
        if self.listener_protocol == "PLAINTEXT":
            return {}
        user, password = next(iter(self.scram_users.items()))
        return {"security.protocol": self.listener_protocol, "sasl.mechanism": "SCRAM-SHA-256",
                "sasl.username": user, "sasl.password": password}

    def _stop_node(self, node: _Node, sig: signal.Signals) -> None:
        process = node.process
        if process is not None and process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                logger.warning("Apache Kafka node %s (pid %s) outlived %ss; killing it",
                               node.node_id, process.pid, _STOP_GRACE_S)
                process.kill()
                process.wait(timeout=_STOP_GRACE_S)
        if node.log_file is not None:
            node.log_file.close()
            node.log_file = None

    def _stop_all(self, sig: signal.Signals) -> None:
        # Signal every node first, then wait: nodes shutting down one by one would each wait
        # for a controller quorum that the next one is about to leave.
        for node in self._nodes:
            if node.running() and node.process is not None:
                node.process.send_signal(sig)
        for node in self._nodes:
            self._stop_node(node, signal.SIGKILL if sig == signal.SIGKILL else sig)

    def _cleanup(self) -> None:
        if self._owns_data_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None
            self._owns_data_dir = False

    def _tail(self, node: _Node) -> str:
        try:
            if node.log_file is not None:
                node.log_file.flush()
            data = node.log_path.read_bytes()[-_LOG_TAIL_BYTES:]
        except OSError:
            return ""
        text = data.decode("utf-8", errors="replace").strip()
        return f"\n--- {node.log_path} (tail) ---\n{text}" if text else ""


def run_foreground(port: int = 9092, nodes: int = 1, data_dir: Path | None = None) -> None:
    """Run Apache Kafka until SIGINT/SIGTERM; backs ``agentfleet broker --engine kafka``.

    Raises EmbeddedBrokerError if a node dies on its own.
    """
    cluster = ApacheKafka(nodes=nodes, port=port, data_dir=data_dir)

    def start() -> list[subprocess.Popen[bytes]]:
        cluster.start()
        return [node.process for node in cluster._nodes if node.process is not None]

    def died(process: subprocess.Popen[bytes]) -> str:
        node = next(n for n in cluster._nodes if n.process is process)
        code = process.returncode
        return f"Apache Kafka node {node.node_id} exited unexpectedly with code {code}{cluster._tail(node)}"

    run_until_signal(start, lambda: f"Apache Kafka {cluster.version} (KRaft, {nodes} node{'s' if nodes > 1 else ''}) "
                                    f"listening on {cluster.bootstrap_servers}", cluster.stop, died)
