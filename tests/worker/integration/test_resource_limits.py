"""Issue 6, resource limits: unwritable or full state dir, unreachable broker, corrupt RocksDB stores.

Every test drives a real ``agentfleet worker`` process. Broker outages go through a TCP proxy in
front of a dedicated embedded broker that advertises the proxy's port: cutting the proxy makes
Kafka unreachable while the broker keeps its in-memory state (restarting Tansu would lose every
topic, group and transactional id, see BROKER.md, so a restart could not show recovery).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentplan.testing.llm_stub import StubLLMServer
from tests.kafka_support import KafkaCluster
from tests.worker.integration.harness import (
    REPO,
    WorkerProcess,
    assert_counts_continue,
    counted_round,
    produce_round,
    read_all,
    wait_for,
)
from tests.worker.integration.tcp_proxy import TcpProxy
from worker.kafka.embedded import EmbeddedBroker, free_port
from worker.state.store import PartitionStore

pytestmark = pytest.mark.integration

AGENT = "tests.worker.integration.agents:CountingAgent"
PARTITIONS = 2
KEYS = [f"k{i}" for i in range(6)]
MARGIN_S = 20.0  # interpreter start-up, imports and librdkafka connection set-up on a busy 2-core machine


def full_log(worker: WorkerProcess) -> str:
    """The whole log: librdkafka's reconnect lines would push a warning out of ``log()``'s tail."""
    return worker.log_path.read_text(errors="replace")


def run_worker_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120
                   ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker.cli", "worker", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


# -- state directory --------------------------------------------------------------------------------

@pytest.fixture()
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs under tmp_path (needs root / CAP_SYS_ADMIN); unmounted in teardown."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def fill(directory: Path) -> Path:
    """Write a file until the file system reports ENOSPC; return it (delete it to free the space)."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as file:
        for chunk in (1 << 16, 1 << 12, 1):
            while True:
                try:
                    file.write(b"\0" * chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    return filler


@pytest.mark.parametrize("how", ["path-is-a-file", "read-only"])
def test_unwritable_state_dir_fails_fast_naming_the_setting(tmp_path: Path, how: str):
    if how == "path-is-a-file":
        blocker = tmp_path / "not-a-dir"
        blocker.write_text("x")
        state_dir = blocker / "state"
    else:
        state_dir = tmp_path / "ro"
        state_dir.mkdir()
        if os.geteuid() == 0:  # root ignores permission bits: use a read-only mount instead
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(state_dir)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"root cannot be denied by permissions and mounting failed: {done.stderr.strip()}")
        else:
            state_dir.chmod(0o500)
    try:
        started = time.monotonic()
        # Port 1: the state dir must be checked before any broker connection is attempted.
        out = run_worker_cli("--agent", "tests.worker.integration.agents:PoisonAgent", "--input-topic", "i",
                             "--output-topic", "o", "--bootstrap-servers", "127.0.0.1:1", "--metrics-port", "-1",
                             "--state-dir", str(state_dir))
    finally:
        if how == "read-only" and os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(state_dir)], check=True)
    assert out.returncode == 2, out.stderr
    assert "state-dir: " in out.stderr and "is not writable" in out.stderr, out.stderr
    assert "AGENTFLEET_STATE_DIR" in out.stderr
    assert time.monotonic() - started < MARGIN_S  # did not wait for the (unreachable) broker


def test_full_state_dir_mid_run_exits_and_a_restart_continues_from_the_changelog(
        kafka, worker_factory, app_id, small_tmpfs: Path):
    input_topic = kafka.new_topic("enospc-in", partitions=PARTITIONS)
    output_topic = kafka.new_topic("enospc-out", partitions=PARTITIONS)
    state_dir = small_tmpfs / "state"
    a = worker_factory(AGENT, input_topic, output_topic, app_id, instance_id="a", state_dir=state_dir)
    a.wait_ready(min_partitions=PARTITIONS)
    counted_round(kafka, input_topic, output_topic, PARTITIONS, KEYS, 0, a)

    filler = fill(small_tmpfs)
    # Small writes may still fit into the last page of RocksDB's write-ahead log: keep feeding
    # rounds until a store write fails (bounded). The next round goes once this one is out (about 20
    # rounds fill the page), or as soon as the worker has stopped.
    rounds = 1
    while a.running() and rounds < 40:
        produce_round(kafka, input_topic, KEYS, rounds)
        rounds += 1
        out = rounds * len(KEYS)
        wait_for(lambda out=out: not a.running() or a.metric("agentfleet_records_out_total") >= out,
                 timeout_s=10.0, interval_s=0.05)
    assert wait_for(lambda: not a.running(), timeout_s=30), "worker kept running on a full disk:\n" + a.log()
    assert a.proc is not None and a.proc.returncode == 1, a.log()
    log = a.log()
    assert "state-dir: cannot write the state store" in log and "No space left on device" in log, log
    assert "safe in the changelog" in log

    # Space comes back; the restarted worker restores the missing tail and counts continue.
    filler.unlink()
    a = worker_factory(AGENT, input_topic, output_topic, app_id, instance_id="a", state_dir=state_dir)
    a.wait_ready(min_partitions=PARTITIONS)
    messages = counted_round(kafka, input_topic, output_topic, PARTITIONS, KEYS, rounds, a)
    rounds += 1
    assert_counts_continue(messages, KEYS, rounds)
    assert a.terminate() == 0, a.log()


def test_corrupt_stores_are_rebuilt_from_the_changelog(kafka, worker_factory, app_id, tmp_path: Path):
    input_topic = kafka.new_topic("corrupt-in", partitions=PARTITIONS)
    output_topic = kafka.new_topic("corrupt-out", partitions=PARTITIONS)
    state_dir = tmp_path / "state"
    a = worker_factory(AGENT, input_topic, output_topic, app_id, instance_id="a", state_dir=state_dir)
    a.wait_ready(min_partitions=PARTITIONS)
    counted_round(kafka, input_topic, output_topic, PARTITIONS, KEYS, 0, a)
    assert a.terminate() == 0, a.log()

    corrupted = 0
    for store_dir in (state_dir / app_id).iterdir():
        store, _rebuilt = PartitionStore.open_or_rebuild(store_dir)
        keys = store.keys()
        store.close()
        assert keys, "round 0 left no state to corrupt"
        for file in store_dir.iterdir():
            if file.is_file() and file.name != "LOCK":
                data = bytearray(file.read_bytes())
                for i in range(0, len(data), 7):
                    data[i] ^= 0xFF
                file.write_bytes(bytes(data))
                corrupted += 1
    assert corrupted

    a = worker_factory(AGENT, input_topic, output_topic, app_id, instance_id="a", state_dir=state_dir)
    a.wait_ready(min_partitions=PARTITIONS)
    assert "is corrupt" in a.log() and "rebuilding from the changelog" in a.log(), a.log()
    assert a.metric("agentfleet_restore_records_total") >= len(KEYS)
    messages = counted_round(kafka, input_topic, output_topic, PARTITIONS, KEYS, 1, a)
    assert_counts_continue(messages, KEYS, 2)
    assert a.terminate() == 0, a.log()


# -- broker reachability ------------------------------------------------------------------------------

class ProxiedBroker:
    """A dedicated embedded broker reachable only through a TcpProxy (not the session broker)."""

    def __init__(self) -> None:
        self.proxy = TcpProxy(upstream_port=free_port())
        self.broker = EmbeddedBroker(port=self.proxy.upstream_port, advertised_port=self.proxy.port)
        self.bootstrap_servers = f"127.0.0.1:{self.proxy.port}"
        self.cluster: KafkaCluster | None = None

    def start(self) -> ProxiedBroker:
        self.broker.start()
        self.proxy.restore()
        self.cluster = KafkaCluster(self.bootstrap_servers, "embedded", hides_aborted=False)
        return self

    def stop(self) -> None:
        self.proxy.cut()
        self.broker.stop()

    def topics(self, *prefixes: str) -> list[str]:
        assert self.cluster is not None
        return [self.cluster.new_topic(prefix, partitions=PARTITIONS) for prefix in prefixes]


@pytest.fixture()
def proxied_broker() -> Iterator[ProxiedBroker]:
    setup = ProxiedBroker().start()
    try:
        yield setup
    finally:
        setup.stop()


@pytest.fixture()
def proxied_worker(proxied_broker: ProxiedBroker, stub_llm: StubLLMServer, tmp_path: Path):
    started: list[WorkerProcess] = []

    def make(input_topic: str, output_topic: str, env: dict[str, str] | None = None) -> WorkerProcess:
        worker = WorkerProcess(proxied_broker.bootstrap_servers, AGENT, input_topic, output_topic,
                               f"app-{uuid.uuid4().hex[:8]}", tmp_path / "state", "w", tmp_path,
                               env={"OPENAI_BASE_URL": stub_llm.base_url, "OPENAI_API_KEY": "test", **(env or {})})
        started.append(worker)
        return worker.start()

    yield make
    for worker in started:
        if worker.running():
            worker.kill()


def test_unreachable_broker_at_start_exits_after_the_deadline_naming_it():
    deadline_s = 3.0
    started = time.monotonic()
    out = run_worker_cli("--agent", "tests.worker.integration.agents:PoisonAgent", "--input-topic", "i",
                         "--output-topic", "o", "--bootstrap-servers", f"127.0.0.1:{free_port()}",
                         "--metrics-port", "-1", env={"AGENTFLEET_STARTUP_TIMEOUT_S": str(deadline_s)})
    elapsed = time.monotonic() - started
    assert out.returncode == 2, out.stderr
    assert "bootstrap.servers: cannot reach Kafka" in out.stderr, out.stderr
    assert "AGENTFLEET_STARTUP_TIMEOUT_S" in out.stderr, out.stderr
    assert deadline_s <= elapsed < deadline_s + MARGIN_S


def test_broker_coming_up_during_start_up_is_waited_for(proxied_broker: ProxiedBroker, proxied_worker):
    input_topic, output_topic = proxied_broker.topics("late-in", "late-out")
    proxied_broker.proxy.cut(refuse=False)
    worker = proxied_worker(input_topic, output_topic, env={"AGENTFLEET_STARTUP_TIMEOUT_S": "60"})
    # The broker comes back only after the worker's connection attempts have been turned away.
    assert wait_for(lambda: proxied_broker.proxy.dropped >= 2, timeout_s=MARGIN_S), worker.log()
    assert worker.running()
    proxied_broker.proxy.restore()
    worker.wait_ready(min_partitions=PARTITIONS)
    produce_round(proxied_broker.cluster, input_topic, KEYS, 0)
    messages = read_all(proxied_broker.bootstrap_servers, output_topic, PARTITIONS, expected=len(KEYS))
    assert_counts_continue(messages, KEYS, 1)
    assert worker.terminate() == 0, worker.log()


@pytest.mark.parametrize("outage_s", [0.0, 8.0], ids=["brief", "longer-than-session-timeout"])
def test_broker_outage_mid_run_is_waited_out_and_state_continues(proxied_broker: ProxiedBroker, proxied_worker,
                                                                 stub_llm: StubLLMServer, outage_s: float):
    input_topic, output_topic = proxied_broker.topics("outage-in", "outage-out")
    worker = proxied_worker(input_topic, output_topic)
    worker.wait_ready(min_partitions=PARTITIONS)
    produce_round(proxied_broker.cluster, input_topic, KEYS, 0)
    assert len(read_all(proxied_broker.bootstrap_servers, output_topic, PARTITIONS, expected=len(KEYS))) == len(KEYS)

    # Round 1's runs are waiting on the model when Kafka disappears, and finish during the outage:
    # their commits must wait for the broker, then go through exactly once.
    stub_llm.set_latency(1500)
    produce_round(proxied_broker.cluster, input_topic, KEYS, 1)
    assert stub_llm.wait_for_requests(2 * len(KEYS), timeout=MARGIN_S), worker.log()
    proxied_broker.proxy.cut()
    assert wait_for(lambda: "is unreachable" in full_log(worker), timeout_s=MARGIN_S), worker.log()
    assert wait_for(lambda: stub_llm.stats()["in_flight"] == 0, timeout_s=MARGIN_S)
    # The session timeout is 6 s: a longer outage costs the worker its group membership.
    assert not wait_for(lambda: not worker.running(), timeout_s=outage_s), worker.log()
    assert worker.running(), worker.log()
    stub_llm.set_latency(0)
    proxied_broker.proxy.restore()
    assert wait_for(lambda: "reachable again" in full_log(worker), timeout_s=MARGIN_S), worker.log()

    produce_round(proxied_broker.cluster, input_topic, KEYS, 2)
    messages = read_all(proxied_broker.bootstrap_servers, output_topic, PARTITIONS, expected=3 * len(KEYS))
    assert len(messages) == 3 * len(KEYS), worker.log()
    assert_counts_continue(messages, KEYS, 3)  # exactly once, state kept across the outage
    assert "fresh transactional producer" in full_log(worker)
    assert worker.running()
    assert worker.terminate() == 0, worker.log()


def test_broker_outage_longer_than_the_deadline_exits_naming_the_setting(proxied_broker: ProxiedBroker,
                                                                        proxied_worker):
    deadline_s = 3.0
    input_topic, output_topic = proxied_broker.topics("gone-in", "gone-out")
    worker = proxied_worker(input_topic, output_topic,
                            env={"AGENTFLEET_BROKER_UNREACHABLE_TIMEOUT_S": str(deadline_s)})
    worker.wait_ready(min_partitions=PARTITIONS)
    proxied_broker.proxy.cut()
    cut_at = time.monotonic()
    assert wait_for(lambda: not worker.running(), timeout_s=deadline_s + MARGIN_S), worker.log()
    assert time.monotonic() - cut_at >= deadline_s
    assert worker.proc is not None and worker.proc.returncode == 1, worker.log()
    assert "broker-unreachable-timeout-s: Kafka at" in full_log(worker), worker.log()
