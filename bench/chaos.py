"""The full chaos run: 3 workers, 12 partitions, 20k records over 2k keys, an event every 5-10 s.

    .venv/bin/python -m bench.chaos [--seed 6] [--records 20000] [--keys 2000] [--rate 100]

Starts the embedded broker and the LLM stub, runs :func:`tests.worker.integration.chaos.run_chaos`
and writes ``bench/results/chaos.json`` and ``bench/results/chaos.md``. Exits 1 when an invariant
fails (lost, duplicated, reordered or re-counted records, repeated committed LLM calls, DLQ records).
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

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from agentplan.testing.llm_stub import StubLLMServer  # noqa: E402
from tests.worker.integration.chaos import (CallLedger, ChaosConfig, render_markdown, run_chaos,  # noqa: E402
                                            violations)
from worker.kafka.admin import TopicAdmin  # noqa: E402
from worker.kafka.embedded import EmbeddedBroker  # noqa: E402

RESULTS = REPO / "bench" / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--keys", type=int, default=2_000)
    parser.add_argument("--rate", type=float, default=100.0, help="input records per second")
    parser.add_argument("--out", type=Path, default=RESULTS / "chaos")
    parser.add_argument("--keep-logs", action="store_true", help="keep the workers' logs and state directories")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    config = ChaosConfig(records=args.records, keys=args.keys, rate_per_s=args.rate, seed=args.seed)
    command = "python -m bench.chaos " + " ".join(argv if argv is not None else sys.argv[1:])
    work_dir = Path(tempfile.mkdtemp(prefix="agentfleet-chaos-"))
    ledger = CallLedger()
    try:
        with EmbeddedBroker() as broker, StubLLMServer(responder=ledger, latency_ms=config.llm_latency_ms) as stub:
            admin = TopicAdmin(broker.bootstrap_servers)
            suffix = uuid.uuid4().hex[:6]
            input_topic, output_topic = f"chaos-in-{suffix}", f"chaos-out-{suffix}"
            admin.create_topic(input_topic, config.partitions)
            admin.create_topic(output_topic, config.partitions)
            report = run_chaos(config, broker.bootstrap_servers, input_topic, output_topic, f"{input_topic}-dlq",
                               f"chaos-{suffix}", stub.base_url, ledger, work_dir, hides_aborted=False, echo=print)
    finally:
        if args.keep_logs:
            print(f"worker logs and state kept in {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    failed = violations(report)
    report["violations"] = failed
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    markdown = render_markdown(report, command.strip())
    args.out.with_suffix(".md").write_text(markdown + (f"\nVIOLATIONS: {failed}\n" if failed else ""))
    print(markdown)
    print("FAILED: " + ", ".join(failed) if failed else "all invariants held")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
