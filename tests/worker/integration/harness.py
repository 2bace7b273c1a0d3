"""Start real worker processes against a real broker and observe them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from worker.kafka.embedded import free_port

REPO = Path(__file__).resolve().parents[3]


class WorkerProcess:
    """``agentfleet worker`` as a subprocess with its own metrics port and log file."""

    def __init__(self, bootstrap: str, agent: str, input_topic: str, output_topic: str, app_id: str,
                 state_dir: Path, instance_id: str, log_dir: Path, env: dict[str, str] | None = None,
                 extra_args: list[str] | None = None, group_protocol: str = "classic",
                 session_timeout_ms: int = 6000) -> None:
        self.metrics_port = free_port()
        self.instance_id = instance_id
        self.log_path = log_dir / f"worker-{instance_id}-{uuid.uuid4().hex[:6]}.log"
        # A classic member asks for its session itself (6 s unless told); a KIP-848 group takes it from the
        # broker or the group's config (see set_consumer_group_session), and the worker refuses
        # session.timeout.ms there.
        session = ["-X", f"session.timeout.ms={session_timeout_ms}"] if group_protocol == "classic" else \
            ["--group-protocol", group_protocol]
        self.args = [sys.executable, "-m", "worker.cli", "worker", "--agent", agent, "--input-topic", input_topic,
                     "--output-topic", output_topic, "--bootstrap-servers", bootstrap, "--app-id", app_id,
                     "--state-dir", str(state_dir), "--instance-id", instance_id,
                     "--metrics-host", "127.0.0.1", "--metrics-port", str(self.metrics_port),
                     *session, *(extra_args or [])]
        self.env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - the worker writes to it until it exits
        self.proc = subprocess.Popen(self.args, cwd=REPO, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=2) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def wait_ready(self, timeout_s: float = 60, min_partitions: int = 1) -> None:
        """Wait until /readyz reports restored partitions (bounded)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log()}")
            status, body = self.http("/readyz")
            if status == 200 and json.loads(body).get("assigned_partitions", 0) >= min_partitions:
                return
            time.sleep(0.1)
        raise AssertionError(f"worker {self.instance_id} not ready in {timeout_s}s:\n{self.log()}")

    def metric(self, name: str) -> float:
        _status, body = self.http("/metrics")
        total = 0.0
        for line in body.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def rss_mb(self) -> float:
        """Resident memory of the worker process, from /proc."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def terminate(self, timeout_s: float = 60) -> int:
        return self._signal(signal.SIGTERM, timeout_s)

    def kill(self) -> int:
        return self._signal(signal.SIGKILL, 10)

    def _signal(self, sig: int, timeout_s: float) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def set_consumer_group_session(bootstrap: str, group: str, session_timeout_ms: int = 6000) -> None:
    """Give a KIP-848 group the session classic members of these tests ask for (``-X session.timeout.ms``).

    Under ``group.protocol=consumer`` the session timeout is a group config, bounded by the broker's
    ``group.consumer.min/max.session.timeout.ms`` (the test broker allows 6 s); it can be set before
    the group exists.
    """
    entry = ConfigEntry("consumer.session.timeout.ms", str(session_timeout_ms),
                        incremental_operation=AlterConfigOpType.SET)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.incremental_alter_configs([ConfigResource(ResourceType.GROUP, group,
                                                                  incremental_configs=[entry])]).values():
        future.result(timeout=30)


def read_all(bootstrap: str, topic: str, partitions: int, expected: int, timeout_s: float = 60,
             isolation: str = "read_committed", stop_when: Any = None) -> list[Message]:
    """Read a topic from the beginning until ``expected`` records arrived (bounded)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "isolation.level": isolation, "fetch.wait.max.ms": 10})
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        out: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < expected and time.monotonic() < deadline:
            if stop_when is not None and stop_when():
                break
            for msg in consumer.consume(num_messages=1000, timeout=0.2):
                if msg.error() is None:
                    out.append(msg)
        return out
    finally:
        consumer.close()


class TopicTail:
    """Read a topic from the beginning on a background thread for as long as a test runs.

    Chaos runs need every record, including ones that arrive after the expected count (duplicates),
    while workers come and go; ``records`` grows until :meth:`stop`.
    """

    def __init__(self, bootstrap: str, topic: str, partitions: int, isolation: str = "read_committed") -> None:
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"tail-{uuid.uuid4().hex}",
                                   "enable.auto.commit": False, "isolation.level": isolation,
                                   "fetch.wait.max.ms": 10})
        self._consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self._lock = threading.Lock()
        self._records: list[Message] = []
        self._stopping = threading.Event()
        self._check_caught_up = threading.Event()
        self._caught_up = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"tail-{topic}", daemon=True)

    def start(self) -> TopicTail:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                batch = [m for m in self._consumer.consume(num_messages=1000, timeout=0.2) if m.error() is None]
                if batch:
                    with self._lock:
                        self._records.extend(batch)
                elif self._check_caught_up.is_set() and self._is_caught_up():
                    self._caught_up.set()
        finally:
            self._consumer.close()

    @property
    def records(self) -> list[Message]:
        with self._lock:
            return list(self._records)

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def from_source(self, partition: int, offset: int) -> list[Message]:
        """Records a worker produced for the input record at ``partition``/``offset`` (by their source headers)."""
        return [m for m in self.records if header(m, "agentfleet.source.offset") == str(offset)
                and header(m, "agentfleet.source.partition") == str(partition)]

    def wait_caught_up(self, timeout_s: float = 30.0) -> bool:
        """Wait until the tail has read every partition up to its high watermark (producers stopped)."""
        self._check_caught_up.set()
        return self._caught_up.wait(timeout_s)

    def _is_caught_up(self) -> bool:
        # On the tail's own thread: librdkafka calls from a second thread block behind consume().
        assignment = self._consumer.assignment()
        positions = {tp.partition: tp.offset for tp in self._consumer.position(assignment)}
        for tp in assignment:
            high = self._consumer.get_watermark_offsets(tp, timeout=5)[1]
            if high > 0 and positions[tp.partition] < high:
                return False
        return True

    def stop(self) -> list[Message]:
        self._stopping.set()
        self._thread.join(10)
        return self.records


def header(msg: Message, name: str) -> str | None:
    for key, value in msg.headers() or []:
        if key == name:
            return value.decode() if value is not None else None
    return None


def wait_for(condition: Any, timeout_s: float = 60.0, interval_s: float = 0.1) -> bool:
    """Poll an external process's observable state (metrics, logs) until ``condition()`` or the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return False


def produce_round(kafka: Any, topic: str, keys: list[str], round_no: int) -> None:
    """One record per key for CountingAgent: ``{"key": k, "seq": round_no}``, keyed by k."""
    kafka.produce(topic, [(k, json.dumps({"key": k, "seq": round_no})) for k in keys])


def counted_round(kafka: Any, input_topic: str, output_topic: str, partitions: int, keys: list[str], round_no: int,
                  *workers: WorkerProcess) -> list[Message]:
    """Produce round ``round_no`` and read the output until every round so far is out (asserted)."""
    produce_round(kafka, input_topic, keys, round_no)
    expected = (round_no + 1) * len(keys)
    messages = read_all(kafka.bootstrap_servers, output_topic, partitions, expected=expected)
    assert len(messages) == expected, "".join(w.log() for w in workers)
    return messages


def assert_counts_continue(messages: list[Message], keys: list[str], rounds: int) -> None:
    """Per key, in output order, round r produced count r+1: nothing lost, repeated or reordered,
    and the count carried over every restart, move and outage in between."""
    by_key: dict[str, list[tuple[int, int]]] = {}
    for m in messages:
        value = json.loads(m.value())
        by_key.setdefault(value["key"], []).append((value["seq"], value["count"]))
    assert sorted(by_key) == sorted(keys)
    for key, entries in by_key.items():
        assert entries == [(r, r + 1) for r in range(rounds)], (key, entries)


@contextmanager
def serving(worker: WorkerProcess, bootstrap: str, input_topic: str, output_topic: str,
            partitions: int) -> Iterator[tuple[TopicTail, TopicTail]]:
    """A started worker, ready on every partition, with tails on its output and dead-letter topics.

    On exit the worker must stop cleanly on SIGTERM; whatever happens, it and the tails are stopped.
    """
    outputs = TopicTail(bootstrap, output_topic, partitions).start()
    dlq = TopicTail(bootstrap, f"{input_topic}-dlq", partitions)
    try:
        worker.wait_ready(min_partitions=partitions)
        dlq.start()  # the worker creates the dead-letter topic at start-up
        yield outputs, dlq
        assert worker.terminate() == 0, worker.log()
    finally:
        if worker.running():
            worker.kill()
        outputs.stop()
        dlq.stop()
