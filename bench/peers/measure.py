"""Run the peers once each on a broker and the LLM stub; print one JSON line per run.

    .venv/bin/python -m bench.peers.measure [--broker kafka|tansu] --count 200 --latency-ms 0 200
    .venv/bin/python -m bench.peers.measure --count 200 --latency-ms 200 --peers flink_agents \
        --peer-args flink_agents "--parallelism 8"

The full side-by-side comparison with our worker is bench/harness's job; this is the quick
check that every peer works here and what it does on its own. For each run a fresh input
topic gets ``count`` seed records keyed by id (the Flink Agents peers build their own collection).
The broker is Apache Kafka unless ``--broker tansu`` (bench/broker.py); the first line names it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
import uuid

from confluent_kafka import Producer

from agentplan.testing.llm_stub import StubLLMServer
from bench.broker import add_broker_argument, require_broker, start_broker
from bench.peers import COLLECTION_PEERS, PEERS, run_peer
from bench.peers.peer_common import seed_records
from bench.peers.venv import ensure_venv
from worker.kafka.admin import TopicAdmin

logger = logging.getLogger(__name__)


def produce_seed_records(bootstrap: str, topic: str, count: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    for record in seed_records(count):
        producer.produce(topic, key=record["id"], value=json.dumps(record, ensure_ascii=False))
    if producer.flush(30):
        raise RuntimeError(f"input records to {topic} not delivered within 30s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_broker_argument(parser)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 200.0])
    parser.add_argument("--peers", nargs="+", choices=sorted(PEERS), default=list(PEERS))
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--model", default="stub-model")
    parser.add_argument("--timeout-s", type=float, default=600.0)
    parser.add_argument("--peer-args", nargs=2, action="append", default=[], metavar=("PEER", "ARGS"),
                        help='extra CLI arguments for one peer, e.g. --peer-args flink_agents "--parallelism 8"')
    args = parser.parse_args(argv)
    require_broker(args.broker)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    extra_args: dict[str, list[str]] = {}
    for name, text in args.peer_args:
        if name not in PEERS:
            parser.error(f"--peer-args: unknown peer {name!r}")
        extra_args.setdefault(name, []).extend(shlex.split(text))

    for venv in sorted({PEERS[name][1] for name in args.peers}):
        stamp = ensure_venv(venv)
        print(json.dumps({"peers_venv": venv, **{k: stamp[k] for k in ("pip_install_seconds", "total_build_seconds")}}),
              flush=True)
    with start_broker(args.broker) as broker, StubLLMServer() as stub:
        print(json.dumps({"broker": broker.info()["description"]}), flush=True)
        admin = TopicAdmin(broker.bootstrap_servers)
        for latency_ms in args.latency_ms:
            stub.set_latency(latency_ms)
            for name in args.peers:
                run_id = uuid.uuid4().hex[:8]
                input_topic, output_topic = f"peer-in-{name}-{run_id}", f"peer-out-{name}-{run_id}"
                admin.create_topic(input_topic, args.partitions)
                admin.create_topic(output_topic, args.partitions)
                if name not in COLLECTION_PEERS:
                    produce_seed_records(broker.bootstrap_servers, input_topic, args.count)
                load_before = os.getloadavg()[0]
                requests_before = stub.request_count
                started = time.monotonic()
                result = run_peer(name, bootstrap=broker.bootstrap_servers, input_topic=input_topic,
                                  output_topic=output_topic, count=args.count, llm_base_url=stub.base_url,
                                  model=args.model, timeout_s=args.timeout_s, extra_args=extra_args.get(name))
                result["process_wall_s"] = round(time.monotonic() - started, 2)
                result["stub_latency_ms"] = latency_ms
                result["llm_requests"] = stub.request_count - requests_before
                # Other work on the machine skews figures: note the load around the run.
                result["loadavg_1m_before_after"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
                print(json.dumps(result), flush=True)
                admin.delete_topics([input_topic, output_topic])
    return 0


if __name__ == "__main__":
    sys.exit(main())
