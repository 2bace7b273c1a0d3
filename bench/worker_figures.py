"""Quick worker figures on this machine (2 cores): throughput, restore rate, failover time.

    .venv/bin/python bench/worker_figures.py

Not the side-by-side benchmark harness (that is bench's main job, still to come); these are the
figures the worker issue asks to note, measured in one run on the embedded broker.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from confluent_kafka import Producer  # noqa: E402

from tests.worker.integration.harness import WorkerProcess, free_port, read_all, wait_for  # noqa: E402
from worker.kafka.admin import TopicAdmin  # noqa: E402
from worker.kafka.embedded import EmbeddedBroker  # noqa: E402


def produce(bootstrap: str, topic: str, n: int, keys: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(n):
        producer.produce(topic, key=f"k{i % keys}", value=json.dumps({"key": f"k{i % keys}", "seq": i // keys}))
        if i % 10000 == 0:
            producer.poll(0)
    producer.flush(60)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="agentfleet-figures-"))
    stub_port = free_port()
    stub = subprocess.Popen([sys.executable, "-m", "agentplan.testing.llm_stub", "--port", str(stub_port)],
                            stdout=subprocess.PIPE, cwd=REPO)
    assert stub.stdout is not None
    stub.stdout.readline()
    env = {"OPENAI_BASE_URL": f"http://127.0.0.1:{stub_port}/v1", "OPENAI_API_KEY": "x"}
    figures = {}
    try:
        with EmbeddedBroker() as broker:
            bs = broker.bootstrap_servers
            admin = TopicAdmin(bs)

            def worker(agent: str, inp: str, out: str, app: str, iid: str, state: Path) -> WorkerProcess:
                return WorkerProcess(bs, f"tests.worker.integration.agents:{agent}", inp, out, app, state, iid, tmp,
                                     env=env, extra_args=["--log-level", "WARNING"]).start()

            # 1. Engine + transactions, no LLM: echo agent, 20k records, 5k keys, 4 partitions.
            n = 20_000
            admin.create_topic("echo-in", 4)
            admin.create_topic("echo-out", 4)
            produce(bs, "echo-in", n, 5000)
            state = tmp / "echo-state"
            w = worker("PoisonAgent", "echo-in", "echo-out", "echo", "e1", state)
            w.wait_ready(min_partitions=4)
            t0 = time.monotonic()
            got = read_all(bs, "echo-out", 4, n, timeout_s=300)
            figures["echo_records_per_s"] = round(len(got) / (time.monotonic() - t0))
            assert w.terminate() == 0

            # 2. Restore: delete the state dir, restart, read the restore metrics.
            shutil.rmtree(state)
            w = worker("PoisonAgent", "echo-in", "echo-out", "echo", "e1", state)
            w.wait_ready(min_partitions=4)
            restored = w.metric("agentfleet_restore_records_total")
            seconds = w.metric("agentfleet_restore_duration_seconds_sum")
            figures["restore_records"] = int(restored)
            figures["restore_records_per_s"] = round(restored / seconds) if seconds else None
            assert w.terminate() == 0

            # 3. With an LLM call per record through the HTTP stub (0 ms latency), 3k records, 500 keys.
            n = 3000
            admin.create_topic("llm-in", 4)
            admin.create_topic("llm-out", 4)
            produce(bs, "llm-in", n, 500)
            w = worker("CountingAgent", "llm-in", "llm-out", "llm", "l1", tmp / "llm-state")
            w.wait_ready(min_partitions=4)
            t0 = time.monotonic()
            got = read_all(bs, "llm-out", 4, n, timeout_s=300)
            figures["llm_stub_records_per_s"] = round(len(got) / (time.monotonic() - t0))

            # 4. Failover: a second worker takes half; SIGKILL it; time until the survivor owns all 4 again.
            w2 = worker("CountingAgent", "llm-in", "llm-out", "llm", "l2", tmp / "llm-state-2")
            w2.wait_ready(min_partitions=1)
            assert wait_for(lambda: w.metric("agentfleet_assigned_partitions") < 4, 60)
            t0 = time.monotonic()
            w2.kill()
            assert wait_for(lambda: w.metric("agentfleet_assigned_partitions") == 4, 60, 0.05)
            figures["failover_s_after_sigkill"] = round(time.monotonic() - t0, 1)
            figures["session_timeout_ms"] = 6000
            w.terminate()
    finally:
        stub.terminate()
        stub.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
