"""The full chaos run: 3 workers, 12 partitions, 20k records over 2k keys, an event every 5-10 s.

    .venv/bin/python -m bench.chaos [--broker kafka|tansu] [--nodes 1|3] [--seed 6] [--records 20000]
        [--keys 2000] [--rate 100] [--keep-logs]

Starts the broker (Apache Kafka by default, bench/broker.py) and the LLM stub, runs
:func:`tests.worker.integration.chaos.run_chaos` and writes ``bench/results/chaos.{json,md}``
(``chaos-3-nodes.{json,md}`` with ``--nodes 3``). Exits 1 when an invariant fails (lost, duplicated,
reordered or re-counted records, repeated committed LLM calls, DLQ records, anything excused on a
broker that hides aborted records, a recovery longer than the session timeout + 5 s).

``--nodes 3``: topics with replication factor 3 and min.insync.replicas=2, and the schedule adds one
broker-kill: the group coordinator's node is SIGKILLed and started again 10 s later.
The quick variant with the same assertions is tests/worker/integration/test_chaos.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from agentplan.testing.llm_stub import StubLLMServer  # noqa: E402
from bench.broker import add_broker_argument, require_broker, start_broker, topic_settings  # noqa: E402
from bench.cluster import SESSION_TIMEOUT_MS  # noqa: E402
from tests.second_reader import output_copies, read_topic_to_end  # noqa: E402
from tests.worker.integration.chaos import BROKER_KILL, CallLedger, ChaosConfig, render_markdown, run_chaos, violations  # noqa: E402
from worker.kafka.admin import TopicAdmin  # noqa: E402

RESULTS = REPO / "bench" / "results"
# A partition's output may pause this long beyond the session timeout after an event (the goal of S6 too).
RECOVERY_MARGIN_S = 5.0


def second_reader_not_once(bootstrap: str, output_topic: str, config: ChaosConfig) -> int:
    """Inputs whose output kafka-python (read_committed), which shares no code with the workers'
    librdkafka, does not read exactly once; outputs of no input count too."""
    copies = output_copies(read_topic_to_end(bootstrap, output_topic))
    expected = {(f"k{i % config.keys}", i // config.keys) for i in range(config.records)}
    return sum(1 for ks in expected if copies.get(ks, 0) != 1) + len(set(copies) - expected)


def full_run_checks(report: dict[str, Any]) -> dict[str, tuple[Any, bool]]:
    """What the full run asks beyond :func:`violations` (lost, duplicates, order, counts, repeated LLM
    calls, DLQ), each figure with whether it holds."""
    limit = report["session_timeout_s"] + RECOVERY_MARGIN_S
    recovery = report["max_recovery_s"]
    # An event whose victim held partitions (a broker kill: all of them) that never showed output again.
    unmeasured = [f"{e['kind']} {e['instance']}" for e in report["events"] if e.get("recovery_s") is None
                  and (e["kind"] == BROKER_KILL or (e["kind"] != "join" and e.get("partitions")))]
    checks: dict[str, tuple[Any, bool]] = {}
    if "second_reader_not_once" in report:
        checks["inputs kafka-python (read_committed) did not read exactly once"] = \
            (report["second_reader_not_once"], report["second_reader_not_once"] == 0)
    return {
        **checks,
        # Only a broker that shows aborted records may excuse any; on Apache Kafka nothing is.
        "excused transactions": (len(report["excused_transactions"]),
                                 not report["excused_transactions"] or not report["broker_hides_aborted"]),
        f"max recovery (s) <= session timeout + {RECOVERY_MARGIN_S:g} s = {limit:g}":
            (recovery, recovery is not None and recovery <= limit),
        "events without a measured recovery": (unmeasured, not unmeasured),
    }


def render_checks(checks: dict[str, tuple[Any, bool]]) -> str:
    lines = ["## Full-run checks (beyond the invariants above)", "", "| check | value | holds |", "|---|---|:-:|"]
    lines += [f"| {name} | {value} | {'yes' if holds else '**no**'} |" for name, (value, holds) in checks.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0])
    add_broker_argument(parser)
    parser.add_argument("--nodes", type=int, choices=(1, 3), default=1,
                        help="Apache Kafka nodes; 3 adds replication (RF 3, min ISR 2) and a broker-kill event")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--keys", type=int, default=2_000)
    parser.add_argument("--rate", type=float, default=100.0, help="input records per second")
    parser.add_argument("--out", type=Path, default=None,
                        help="results path without suffix (default bench/results/chaos, or chaos-3-nodes)")
    parser.add_argument("--group-protocol", choices=("classic", "consumer"), default="classic",
                        help="the workers' consumer group protocol (consumer = KIP-848, Apache Kafka only)")
    parser.add_argument("--session-timeout-ms", type=int, default=SESSION_TIMEOUT_MS,
                        help="the workers' session timeout (classic: -X session.timeout.ms; consumer: the group's "
                             "consumer.session.timeout.ms); the recovery goal is this plus "
                             f"{RECOVERY_MARGIN_S:g} s")
    parser.add_argument("--warmup-s", type=float, default=0.0,
                        help="seconds of production before the first event (a cold 3-node cluster on 2 cores "
                             "commits slowly for its first ~30 s)")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the workers' logs and state directories (and Apache Kafka's node directories)")
    args = parser.parse_args(argv)
    if args.nodes != 1 and args.broker != "kafka":
        parser.error("--nodes 3 needs --broker kafka")
    require_broker(args.broker)
    logging.basicConfig(level=logging.WARNING)
    out: Path = args.out or RESULTS / ("chaos" if args.nodes == 1 else f"chaos-{args.nodes}-nodes")
    config = ChaosConfig(records=args.records, keys=args.keys, rate_per_s=args.rate, seed=args.seed,
                         broker_kills=1 if args.nodes > 1 else 0, group_protocol=args.group_protocol,
                         session_timeout_ms=args.session_timeout_ms, warmup_s=args.warmup_s)
    command = "python -m bench.chaos " + " ".join(argv if argv is not None else sys.argv[1:])
    work_dir = Path(tempfile.mkdtemp(prefix="agentfleet-chaos-"))
    ledger = CallLedger()
    try:
        kept = work_dir / "broker" if args.keep_logs and args.broker == "kafka" else None
        with start_broker(args.broker, args.nodes, data_dir=kept) as broker, \
                StubLLMServer(responder=ledger, latency_ms=config.llm_latency_ms) as stub:
            info = broker.info(config.group_protocol)
            print(f"broker: {info['description']} on {broker.bootstrap_servers}; group protocol "
                  f"{info['group_protocol']}", flush=True)
            admin = TopicAdmin(broker.bootstrap_servers)
            replicas, topic_config = topic_settings(args.nodes)
            suffix = uuid.uuid4().hex[:6]
            input_topic, output_topic = f"chaos-in-{suffix}", f"chaos-out-{suffix}"
            for topic in (input_topic, output_topic):
                admin.create_topic(topic, config.partitions, topic_config, replication_factor=replicas)
            report = run_chaos(config, broker.bootstrap_servers, input_topic, output_topic, f"{input_topic}-dlq",
                               f"chaos-{suffix}", stub.base_url, ledger, work_dir,
                               hides_aborted=broker.hides_aborted, echo=print,
                               brokers=broker.cluster if args.nodes > 1 else None)
            if broker.hides_aborted:
                report["second_reader_not_once"] = second_reader_not_once(broker.bootstrap_servers, output_topic,
                                                                          config)
    finally:
        if args.keep_logs:
            print(f"worker (and broker) logs and state kept in {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    report["broker"] = info
    report["session_timeout_s"] = config.session_timeout_ms / 1000
    report["warmup_s"] = config.warmup_s
    worker_events = [e["recovery_s"] for e in report["events"]
                     if e["kind"] not in ("join", BROKER_KILL) and e.get("recovery_s") is not None]
    report["max_worker_event_recovery_s"] = max(worker_events, default=None)
    checks = full_run_checks(report)
    failed = violations(report) + [f"{name}: {value}" for name, (value, holds) in checks.items() if not holds]
    report["violations"] = failed
    report["full_run_checks"] = {name: {"value": value, "holds": holds} for name, (value, holds) in checks.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    markdown = render_markdown(report, command.strip()) + "\n" + render_checks(checks)
    out.with_suffix(".md").write_text(markdown + (f"\nVIOLATIONS: {failed}\n" if failed else ""))
    print(markdown)
    print("FAILED: " + ", ".join(failed) if failed else "all invariants held")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
