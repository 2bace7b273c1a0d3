"""What a scenario runs against: a broker (bench/broker.py), stub processes, topics, workers, input and output.

Workers are ``agentfleet worker`` subprocesses started through the integration tests' harness, so the
benchmark measures exactly what the tests exercise.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from bench.broker import DEFAULT_BROKER, DEFAULT_JIT, BenchBroker, start_broker
from bench.peers.peer_common import take_ready  # one definition for ours and the peers
from bench.warmup import warm_broker
from tests.worker.integration.harness import WorkerProcess, read_all
from worker.kafka.admin import TopicAdmin
from worker.kafka.embedded import free_port

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
SENTIMENT_AGENT = "examples.sentiment.sentiment_agent:SentimentAnalysisAgent"
SENTIMENT_INPUT = "examples.sentiment.custom_types:TextInput"
HTTP_LLM = "examples.sentiment.custom_types:local_llm_descriptor"
INSTANT_LLM = "bench.agents:instant_llm_descriptor"
SESSION_TIMEOUT_MS = 6000  # what WorkerProcess passes to every worker
_TEXTS = (
    "I love this product! It exceeded my expectations.",
    "Terrible experience, the product broke after one day.",
    "It's okay, nothing special but does the job.",
    "Best purchase this year, amazing battery and a great screen.",
    "Disappointed: the parcel was lost twice and support was bad.",
)
_CLK_TCK = os.sysconf("SC_CLK_TCK")
# Apache Kafka answers a waiting fetch as soon as data arrives, so a long wait costs no latency and spares
# the broker an empty fetch every few ms per idle reader (200/s at 5 ms). Tansu answers only when the wait
# is up (BROKER.md), so there the reader keeps a short one.
READER_FETCH_WAIT_MS = {"kafka": 500, "tansu": 5}
PACED_LINGER_MS = 5


class BenchError(RuntimeError):
    """A scenario could not run as set up (a process died, outputs never arrived)."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a live process and its live children (a stub with --workers forks)."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        children.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue  # exited meanwhile
    total = cpu_seconds(pid)
    for child in children:
        try:
            total += tree_cpu_seconds(child)
        except OSError:
            continue  # the child exited meanwhile
    return total


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, summed over cores, from /proc/stat."""
    with open("/proc/stat") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / _CLK_TCK, sum(ticks) / _CLK_TCK


def review(i: int, keys: int) -> tuple[bytes, bytes]:
    """The i-th sentiment input record: key and JSON value (TextInput)."""
    key = f"r{i % keys}"
    return key.encode(), json.dumps({"id": key, "text": _TEXTS[i % len(_TEXTS)]}).encode()


class StubProcess:
    """``python -m agentplan.testing.llm_stub`` as a child process (several with ``--workers``)."""

    def __init__(self, latency_ms: float = 0, workers: int = 1, extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.latency_ms = latency_ms
        args = [sys.executable, "-m", "agentplan.testing.llm_stub", "--port", str(self.port),
                "--latency-ms", str(latency_ms), "--no-request-log", "--workers", str(workers), *extra]
        self.proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if "listening" not in line:
            self.stop()
            raise BenchError(f"llm stub did not start: {line}{self.proc.stdout.read(2000).decode()}")
        # Keep draining its output so a chatty stub never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for _ in self.proc.stdout:
            pass

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@dataclass
class Output:
    """One output record as the benchmark sees it."""

    partition: int  # source partition
    offset: int  # source offset
    produced_ms: int  # output record timestamp (set by the worker at produce time)
    received_s: float  # wall clock when the benchmark's reader got it
    producer: str  # transactional id prefix of the producing worker


def _header(headers: Iterable[tuple[str, bytes]] | None, name: str) -> str:
    for key, value in headers or []:
        if key == name:
            return value.decode() if value is not None else ""
    return ""


def paced_linger_ms(rate: float) -> int:
    """The paced input producer's linger: batches only where one would hold more than one record.

    At S3's ~2,000 records/s linger 0 sent ~1,000 produce requests/s (the broker's request metrics), one
    or two records each; at S7's 10 records/s a linger would only delay each record.
    """
    return PACED_LINGER_MS if rate * PACED_LINGER_MS / 1000 > 1 else 0


def to_output(msg: Any, received_s: float) -> Output:
    headers = msg.headers()
    txn = _header(headers, "agentfleet.txn")
    return Output(int(_header(headers, "agentfleet.source.partition") or -1),
                  int(_header(headers, "agentfleet.source.offset") or -1),
                  msg.timestamp()[1], received_s, txn.split("@", 1)[0])


class OutputCollector:
    """Reads an output topic (read_committed) on a thread while a scenario runs, noting arrival times."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, fetch_wait_ms: int = 5) -> None:
        self.outputs: list[Output] = []
        self._stop = threading.Event()
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                                   "enable.auto.commit": False, "isolation.level": "read_committed",
                                   "fetch.wait.max.ms": fetch_wait_ms, "socket.nagle.disable": True})
        self._consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self._thread = threading.Thread(target=self._run, name=f"collect-{topic}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            # A plain consume(1000, 0.05) added 0-50 ms (25 ms p50) to every arrival at low rates:
            # that, not the broker, was the "26 ms per hop" S7 used to report.
            batch = take_ready(self._consumer, 1000, 0.05)
            now = time.time()
            self.outputs.extend(to_output(m, now) for m in batch if m.error() is None)

    def wait_for(self, count: int, timeout_s: float, alive: Any = None) -> bool:
        deadline = time.monotonic() + timeout_s
        while len(self.outputs) < count and time.monotonic() < deadline:
            if alive is not None and not alive():
                return False
            time.sleep(0.05)
        return len(self.outputs) >= count

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


@dataclass
class Cluster:
    """A fresh broker (``engine``: kafka or tansu) plus whatever a scenario starts on it; all stopped on exit."""

    engine: str = DEFAULT_BROKER
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="agentfleet-bench-")))
    stubs: list[StubProcess] = field(default_factory=list)
    workers: list[WorkerProcess] = field(default_factory=list)
    # Seconds of transactional load on the fresh broker before the scenario (bench/warmup.py).
    warmup_s: float = 0.0
    jit: str = DEFAULT_JIT  # bench/broker.py JIT_MODES
    broker: BenchBroker | None = field(default=None, init=False)

    def __enter__(self) -> Cluster:
        self.broker = start_broker(self.engine, jit=self.jit)
        self.admin = TopicAdmin(self.bootstrap)
        if self.warmup_s > 0:
            warm_broker(self.bootstrap, self.warmup_s)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for w in self.workers:
            if w.running():
                w.kill()
        for s in self.stubs:
            s.stop()
        if self.broker is not None:
            self.broker.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def bootstrap(self) -> str:
        if self.broker is None:
            raise BenchError("the cluster's broker runs only inside `with Cluster(...)`")
        return self.broker.bootstrap_servers

    def keep_logs(self, dest: Path) -> Path:
        """Copy the worker logs out of the work directory (removed on exit) for a post-mortem."""
        dest.mkdir(parents=True, exist_ok=True)
        for w in self.workers:
            if w.log_path.exists():
                shutil.copy(w.log_path, dest / w.log_path.name)
        logger.warning("worker logs kept in %s", dest)
        return dest

    def collector(self, topic: str, partitions: int) -> OutputCollector:
        """An :class:`OutputCollector` with the fetch wait this broker suits (READER_FETCH_WAIT_MS)."""
        return OutputCollector(self.bootstrap, topic, partitions, READER_FETCH_WAIT_MS[self.engine])

    def topics(self, *names: str, partitions: int) -> None:
        for name in names:
            self.admin.create_topic(name, partitions)

    def stub(self, latency_ms: float = 0, workers: int = 1, extra: tuple[str, ...] = ()) -> StubProcess:
        stub = StubProcess(latency_ms, workers, extra)
        self.stubs.append(stub)
        return stub

    def worker(self, instance: str, *, input_topic: str, output_topic: str, app_id: str, llm: str,
               stub: StubProcess | None = None, max_inflight: int | None = None,
               extra: list[str] | None = None, env: dict[str, str] | None = None) -> WorkerProcess:
        args = ["--input-model", SENTIMENT_INPUT, "--resource", f"local_llm={llm}", "--log-level",
                "INFO", *(extra or [])]
        if max_inflight is not None:
            args += ["--max-inflight", str(max_inflight)]
        environ = {"OPENAI_API_KEY": "bench", "OPENAI_MODEL": "stub", **(env or {})}
        if stub is not None:
            environ["OPENAI_BASE_URL"] = stub.base_url
        w = WorkerProcess(self.bootstrap, SENTIMENT_AGENT, input_topic, output_topic, app_id,
                          self.workdir / f"state-{app_id}-{instance}", instance, self.workdir, env=environ,
                          extra_args=args).start()
        self.workers.append(w)
        return w

    def produce(self, topic: str, count: int, keys: int, start: int = 0) -> None:
        """Produce ``count`` reviews as fast as the client goes."""
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 20, "batch.num.messages": 10000,
                             "queue.buffering.max.messages": 1_000_000})
        for i in range(start, start + count):
            key, value = review(i, keys)
            producer.produce(topic, value, key)
            if i % 20000 == 0:
                producer.poll(0)
        if producer.flush(120) != 0:
            raise BenchError(f"could not deliver all {count} input records to {topic}")

    def produce_paced(self, topic: str, rate: float, seconds: float, keys: int, start: int = 0) -> int:
        """Produce at ``rate`` records/s for ``seconds`` (open loop, each record when due); returns the count."""
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": paced_linger_ms(rate),
                             "socket.nagle.disable": True})
        began = time.monotonic()
        sent = 0
        total = int(rate * seconds)
        while sent < total:
            due = min(total, int((time.monotonic() - began) * rate) + 1)
            while sent < due:
                key, value = review(start + sent, keys)
                producer.produce(topic, value, key)
                sent += 1
            producer.poll(0)
            time.sleep(max(0.0, began + sent / rate - time.monotonic()))
        producer.flush(60)
        return sent

    def read(self, topic: str, partitions: int, count: int, timeout_s: float) -> list[Output]:
        return [to_output(m, 0.0) for m in read_all(self.bootstrap, topic, partitions, count, timeout_s)]


def wait_ready(worker: WorkerProcess, partitions: int, timeout_s: float = 90) -> float:
    """Poll /readyz every 20 ms until ``partitions`` are assigned and restored; the wall clock then."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not worker.running():
            raise BenchError(f"worker {worker.instance_id} exited:\n{worker.log()}")
        status, body = worker.http("/readyz")
        if status == 200 and json.loads(body).get("assigned_partitions", 0) >= partitions:
            return time.time()
        time.sleep(0.02)
    raise BenchError(f"worker {worker.instance_id} not ready with {partitions} partitions:\n{worker.log()}")


def wait_assignment(workers: list[WorkerProcess], total: int, timeout_s: float = 90) -> None:
    """Until every worker is ready and their assignments add up to ``total`` partitions."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = []
        for w in workers:
            if not w.running():
                raise BenchError(f"worker {w.instance_id} exited:\n{w.log()}")
            status, body = w.http("/readyz")
            states.append((status, json.loads(body).get("assigned_partitions", 0) if body else 0))
        if all(s == 200 and n > 0 for s, n in states) and sum(n for _, n in states) == total:
            return
        time.sleep(0.05)
    raise BenchError(f"workers never settled on {total} partitions: {states}")
