"""Hot-key fairness and worker memory: other keys' latency while a 10k-record key drains.

    .venv/bin/python -m bench.hostile_input [--broker kafka|tansu] [--hot 10000] [--rate 100]

One worker, 4 partitions. Other keys (200 of them) arrive at ``--rate`` records/s throughout; after
a baseline phase, 10k records of one key land at once. Latency = output record timestamp minus input
record timestamp, for the other keys, split into: baseline, during the hot backlog on other
partitions, and during it on the hot key's own partition (which must wait: its offsets are behind the
hot key's). Two agents, measured in the same run: TypedEchoAgent (no model call) and CountingAgent
(one stub LLM call per record, 0 ms stub latency). Worker RSS before, peak and after. Writes
``bench/results/hostile_input.{json,md}``, naming the broker (Apache Kafka unless ``--broker tansu``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from confluent_kafka import Producer  # noqa: E402

from agentplan.testing.llm_stub import StubLLMServer  # noqa: E402
from bench.broker import add_broker_argument, broker_info, require_broker, start_broker  # noqa: E402
from tests.worker.integration.harness import TopicTail, WorkerProcess, header  # noqa: E402
from worker.kafka.admin import TopicAdmin  # noqa: E402

RESULTS = REPO / "bench" / "results"
PARTITIONS = 4
OTHER_KEYS = 200
BASELINE_S = 5.0
AGENTS = {
    "echo (no model call)": ("tests.worker.integration.agents:TypedEchoAgent",
                             ["--input-model", "tests.worker.integration.agents:TypedInput"]),
    "one stub LLM call per record": ("tests.worker.integration.agents:CountingAgent", []),
}


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values)
    return {"n": len(ordered), "p50_ms": round(statistics.median(ordered)),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]), "max_ms": round(ordered[-1])}


def scenario(bootstrap: str, admin: TopicAdmin, agent: str, extra_args: list[str], env: dict[str, str],
             work_dir: Path, hot: int, rate: float) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:6]
    input_topic, output_topic = f"hot-in-{suffix}", f"hot-out-{suffix}"
    admin.create_topic(input_topic, PARTITIONS)
    admin.create_topic(output_topic, PARTITIONS)
    worker = WorkerProcess(bootstrap, agent, input_topic, output_topic, f"hot-{suffix}", work_dir / suffix, "h1",
                           work_dir, env=env, extra_args=["--log-level", "WARNING", *extra_args]).start()
    tail = TopicTail(bootstrap, output_topic, PARTITIONS).start()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    sent: dict[tuple[int, int], float] = {}  # (partition, offset) -> input timestamp (s)

    def delivered(err: Any, msg: Any) -> None:
        if err is None:
            sent[(msg.partition(), msg.offset())] = msg.timestamp()[1] / 1000

    def send(key: str, seq: int) -> None:
        producer.produce(input_topic, key=key, value=json.dumps({"key": key, "seq": seq, "n": seq}),
                         on_delivery=delivered)

    try:
        worker.wait_ready(min_partitions=PARTITIONS)
        rss_before = worker.rss_mb()
        rss_peak = rss_before
        seqs = {f"o{i}": 0 for i in range(OTHER_KEYS)}
        started = time.monotonic()
        produced = 0
        hot_at: float | None = None
        hot_partition: int | None = None
        hot_done: float | None = None
        hot_wall_start = 0.0
        last_rss = last_scan = 0.0
        hot_outputs: list[Any] = []
        scanned = 0
        while hot_done is None or time.monotonic() - started < (hot_done - hot_wall_start) + BASELINE_S + 2:
            now = time.monotonic()
            for _ in range(int((now - started) * rate) - produced):
                key = f"o{produced % OTHER_KEYS}"
                send(key, seqs[key])
                seqs[key] += 1
                produced += 1
            if hot_at is None and now - started >= BASELINE_S:
                hot_wall_start = time.time()
                for i in range(hot):
                    send("hot", i)
                    if i % 1000 == 0:
                        producer.poll(0)
                producer.flush(30)
                hot_at = time.time()
            producer.poll(0)
            if now - last_rss >= 0.5:
                rss_peak = max(rss_peak, worker.rss_mb())
                last_rss = now
            if hot_at is not None and hot_done is None and now - last_scan >= 0.25:
                # Scan only new records, and not often: the stub serves from this process and needs the GIL.
                records = tail.records
                hot_outputs.extend(m for m in records[scanned:] if m.key() == b"hot")
                scanned, last_scan = len(records), now
                if len(hot_outputs) >= hot:
                    hot_done = max(m.timestamp()[1] for m in hot_outputs) / 1000
                    hot_partition = int(header(hot_outputs[0], "agentfleet.source.partition") or -1)
            if now - started > 900:
                raise RuntimeError("hot key did not drain within 900 s")
            time.sleep(0.01)
        producer.flush(30)
        expected = produced + hot
        deadline = time.monotonic() + 120
        while len(tail) < expected and time.monotonic() < deadline:
            time.sleep(0.2)
        rss_after = worker.rss_mb()
        assert worker.terminate() == 0, worker.log()
    finally:
        if worker.running():
            worker.kill()
        records = tail.stop()
    assert hot_at is not None and hot_done is not None
    phases: dict[str, list[float]] = {"baseline": [], "hot backlog, other partitions": [],
                                      "hot backlog, hot key's partition": [], "after": []}
    for msg in records:
        if msg.key() == b"hot":
            continue
        source = (int(header(msg, "agentfleet.source.partition") or -1),
                  int(header(msg, "agentfleet.source.offset") or -1))
        produced_at = sent[source]
        latency_ms = msg.timestamp()[1] - produced_at * 1000
        if produced_at < hot_wall_start:
            phases["baseline"].append(latency_ms)
        elif produced_at <= hot_done:
            phases["hot backlog, hot key's partition" if source[0] == hot_partition
                   else "hot backlog, other partitions"].append(latency_ms)
        else:
            phases["after"].append(latency_ms)
    return {"outputs": len(records), "expected": expected, "hot_records": hot,
            "hot_drain_s": round(hot_done - hot_wall_start, 2),
            "latency": {phase: percentiles(values) for phase, values in phases.items()},
            "rss_mb": {"before": round(rss_before), "peak": round(rss_peak), "after": round(rss_after)}}


def render(results: dict[str, Any], command: str, broker: dict[str, Any]) -> str:
    lines = ["# Hot key and memory", "", f"Command: `{command}`", "",
             f"Broker: {broker['description']}; workers' consumer group protocol: {broker['group_protocol']}.", "",
             "Other keys' latency (input timestamp to output timestamp) while one key's records drain.", "",
             "| agent | hot drain (s) | phase | n | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|---|---|"]
    for agent, r in results.items():
        for phase, p in r["latency"].items():
            lines.append(f"| {agent} | {r['hot_drain_s']} | {phase} | {p['n']} | {p['p50_ms']} | {p['p99_ms']} | "
                         f"{p['max_ms']} |")
    lines += ["", "| agent | outputs / expected | RSS before MB | RSS peak MB | RSS after MB |",
              "|---|---|---|---|---|"]
    for agent, r in results.items():
        rss = r["rss_mb"]
        lines.append(f"| {agent} | {r['outputs']} / {r['expected']} | {rss['before']} | {rss['peak']} | "
                     f"{rss['after']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile_input", description=__doc__.split("\n\n")[0])
    add_broker_argument(parser)
    parser.add_argument("--hot", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=100.0, help="other keys' records per second")
    parser.add_argument("--out", type=Path, default=RESULTS / "hostile_input")
    args = parser.parse_args(argv)
    require_broker(args.broker)
    command = "python -m bench.hostile_input " + " ".join(argv if argv is not None else sys.argv[1:])
    work_dir = Path(tempfile.mkdtemp(prefix="agentfleet-hot-"))
    results = {}
    try:
        with start_broker(args.broker) as broker, StubLLMServer() as stub:
            admin = TopicAdmin(broker.bootstrap_servers)
            env = {"OPENAI_BASE_URL": stub.base_url, "OPENAI_API_KEY": "test"}
            for name, (agent, extra) in AGENTS.items():
                results[name] = scenario(broker.bootstrap_servers, admin, agent, extra, env, work_dir, args.hot,
                                         args.rate)
                print(name, json.dumps(results[name]), flush=True)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    described = broker_info(args.broker)
    args.out.with_suffix(".json").write_text(json.dumps({"broker": described, "agents": results}, indent=2) + "\n")
    markdown = render(results, command.strip(), described)
    args.out.with_suffix(".md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
