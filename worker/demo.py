"""``agentfleet demo``: the whole pipeline on one machine, no Docker.

A broker (embedded Tansu, or Apache Kafka with ``--engine kafka``), the LLM stub (unless OPENAI_BASE_URL
is set), topics, two worker processes and seven sample reviews; prints each result as it is committed,
then stops everything it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Producer

from worker.kafka.admin import TopicAdmin
from worker.kafka.apache import ApacheKafka, check_requirements
from worker.kafka.embedded import EmbeddedBroker, free_port
from worker.progress import progress
from worker.topic_reader import ReadPlan, as_json, read_topic

REPO = Path(__file__).resolve().parents[1]
SEED_INPUT = REPO / "examples" / "sentiment" / "resources" / "input.txt"
AGENT = "examples.sentiment.sentiment_agent:SentimentAnalysisAgent"
PARTITIONS = 4


def demo_records(count: int | None) -> list[tuple[str, str]]:
    if count is None:
        lines = [line for line in SEED_INPUT.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [(json.loads(line)["id"], line) for line in lines]
    texts = ["I love this product!", "Terrible experience, it broke.", "It's okay, nothing special."]
    return [(str(i), json.dumps({"id": str(i), "text": texts[i % len(texts)]})) for i in range(count)]


def run_demo(count: int | None = None, workers: int = 2, timeout_s: float = 120.0,
             echo: Callable[[str], None] = print, engine: str = "tansu") -> int:
    """Returns the number of results received."""
    if engine == "kafka":
        check_requirements()  # before any side effect: a missing Java or Maven is one clear line
    stub = None
    env = dict(os.environ)
    if not env.get("OPENAI_BASE_URL"):
        from agentplan.testing.llm_stub import StubLLMServer

        stub = StubLLMServer().start()
        env.update(OPENAI_BASE_URL=stub.base_url, OPENAI_API_KEY="stub-key")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    records = demo_records(count)
    broker: ApacheKafka | EmbeddedBroker = ApacheKafka() if engine == "kafka" else EmbeddedBroker()
    # Unwound in reverse: workers stop (and commit) while the broker still runs, then the broker, then the stub.
    with contextlib.ExitStack() as stack:
        if stub is not None:
            stack.callback(stub.stop)
        if isinstance(broker, ApacheKafka):
            echo(f"starting Apache Kafka {broker.version} (the first start fetches its jars with Maven)")
        stack.enter_context(broker)
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agentfleet-demo-")))
        bootstrap = broker.bootstrap_servers
        if isinstance(broker, ApacheKafka):
            name, broker_pids = f"Apache Kafka {broker.version}", broker.pids
        else:
            name, broker_pids = "embedded Kafka broker", [broker.pid]
        echo(f"{name} on {bootstrap} (broker pid {', '.join(map(str, broker_pids))}); "
             f"LLM at {env['OPENAI_BASE_URL']}")
        _create_topics(bootstrap)
        procs: list[subprocess.Popen[bytes]] = []
        stack.callback(_stop_workers, procs)
        for i in range(workers):
            port = free_port()
            log = stack.enter_context(open(tmp / f"worker-{i}.log", "wb"))
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "worker.cli", "worker", "--agent", AGENT,
                 "--resource", "local_llm=examples.sentiment.custom_types:local_llm_descriptor",
                 "--input-model", "examples.sentiment.custom_types:TextInput", "--input-topic", "reviews",
                 "--output-topic", "verdicts", "--bootstrap-servers", bootstrap, "--app-id", "demo",
                 "--instance-id", f"demo-{i}", "--state-dir", str(tmp / f"state-{i}"),
                 "--metrics-host", "127.0.0.1", "--metrics-port", str(port), "-X", "session.timeout.ms=6000"],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
            echo(f"worker demo-{i}: pid {procs[-1].pid}, metrics http://127.0.0.1:{port}/metrics")
        _produce(bootstrap, records)
        echo(f"produced {len(records)} records to 'reviews'; results from 'verdicts':")
        received = _print_results(bootstrap, len(records), timeout_s, echo)
        echo(f"{received}/{len(records)} results")
        return received


# The clients live in their own functions so they are gone before the broker stops: a client that
# outlives it logs a connection-refused line per reconnect.
def _create_topics(bootstrap: str) -> None:
    admin = TopicAdmin(bootstrap)
    admin.create_topic("reviews", PARTITIONS)
    admin.create_topic("verdicts", PARTITIONS)


def _produce(bootstrap: str, records: list[tuple[str, str]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "log.connection.close": False})
    for key, value in records:
        producer.produce("reviews", key=key, value=value)
    producer.flush(30)


def _stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _print_results(bootstrap: str, expected: int, timeout_s: float, echo: Callable[[str], None]) -> int:
    received = 0
    with progress("results", total=expected) as advance:
        plan = ReadPlan("verdicts", "earliest", max_records=expected, follow=True, idle_timeout_s=timeout_s)
        for msg in read_topic(bootstrap, plan, {"log.connection.close": False}):
            received += 1
            advance(1)
            if received <= 50:
                echo(json.dumps(as_json(msg)["value"], ensure_ascii=False))
    return received
