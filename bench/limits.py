"""Adaptive concurrency against a rate-limited model endpoint: do three workers settle at its rate?

    .venv/bin/python -m bench.limits [--broker kafka|tansu] [--rate 50] [--latency-ms 200] [--rpm]

The stub answers ``--rate`` requests/s (a token bucket over all clients) and refuses the rest with
429 and a ``Retry-After`` of the wait for the next slot. Three workers run the seed's sentiment agent
(one model call per record) on 6 partitions, their connection under a limiter (``max_concurrency``;
with ``--rpm`` also ``requests_per_minute`` = 60 x rate, shared by partition ownership), and drain a
backlog of ``rate x seconds`` records. The stub's answered requests are sampled every second; the
endpoint has *settled* from the first second after which every 5-second average stays within 10% of
the rate (the drain's last seconds aside). Every input must have exactly one output, and nothing may be
dead-lettered. Writes ``bench/results/limits.{json,md}`` (``limits-rpm`` with ``--rpm``).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import report  # noqa: E402
from bench.broker import add_broker_argument, broker_info, require_broker  # noqa: E402
from bench.cluster import Cluster, wait_assignment  # noqa: E402
from tests.worker.integration.harness import read_all  # noqa: E402

RESULTS = REPO / "bench" / "results"
LIMITED_LLM = "bench.agents:limited_llm_descriptor"
WINDOW_S = 5
TOLERANCE = 0.10


class StubSampler:
    """The stub's answered (200) and refused (429) request counts, once a second, on a thread."""

    def __init__(self, base_url: str) -> None:
        self._url = base_url.removesuffix("/v1") + "/stats"
        self.samples: list[tuple[float, int, int]] = []  # (seconds since start, answered, refused)
        self._stop = threading.Event()
        self._began = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with urllib.request.urlopen(self._url, timeout=5) as response:
                by_status = json.loads(response.read())["by_status"]
            self.samples.append((time.monotonic() - self._began, by_status.get("200", 0), by_status.get("429", 0)))
            self._stop.wait(max(0.0, self._began + len(self.samples) - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def settle_time(samples: list[tuple[float, int, int]], rate: float, total: int) -> tuple[float | None, list[float]]:
    """Seconds until every later 5 s average stays within 10% of ``rate``, and those averages; the drain's
    tail (once 95% of ``total`` answered) is left out, since the backlog, not the limiter, ends it."""
    windows: list[tuple[float, float]] = []
    for i in range(WINDOW_S, len(samples)):
        (t0, ok0, _), (t1, ok1, _) = samples[i - WINDOW_S], samples[i]
        if ok1 >= 0.95 * total:
            break
        windows.append((t1, (ok1 - ok0) / (t1 - t0)))
    settled = None
    for t, average in reversed(windows):
        if abs(average - rate) > TOLERANCE * rate:
            break
        settled = t
    return settled, [round(a, 1) for _, a in windows]


def worker_figures(body: str) -> dict[str, float]:
    """The limiter's series and the dead-letter count from a worker's /metrics."""
    wanted = {"agentfleet_llm_concurrency_limit": "limit", "agentfleet_llm_throttled_seconds_total": "throttled_s",
              "agentfleet_dlq_records_total": "dlq", "agentfleet_transient_retries_total": "retries"}
    figures: dict[str, float] = {}
    for line in body.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in wanted:
            figures[wanted[name]] = figures.get(wanted[name], 0.0) + float(line.rsplit(" ", 1)[1])
    return figures


def run(broker: str, rate: float, latency_ms: float, seconds: float, rpm: bool) -> dict[str, Any]:
    partitions, workers, count = 6, 3, int(rate * seconds)
    with Cluster(broker) as cluster:
        stub = cluster.stub(latency_ms, extra=("--rate-limit", str(rate)))
        input_topic, output_topic, app = f"in-{uuid.uuid4().hex[:6]}", f"out-{uuid.uuid4().hex[:6]}", \
            f"app-{uuid.uuid4().hex[:6]}"
        cluster.topics(input_topic, output_topic, partitions=partitions)
        env = {"BENCH_LLM_RPM": str(rate * 60)} if rpm else {}
        ws = [cluster.worker(f"w{i}", input_topic=input_topic, output_topic=output_topic, app_id=app,
                             llm=LIMITED_LLM, stub=stub, env=env) for i in range(workers)]
        wait_assignment(ws, partitions)
        collector = cluster.collector(output_topic, partitions)
        sampler = StubSampler(stub.base_url)
        began = time.monotonic()
        cluster.produce(input_topic, count, keys=1_000)
        try:
            complete = collector.wait_for(count, timeout_s=seconds * 3 + 60)
            drained_s = time.monotonic() - began
        finally:
            sampler.stop()
            collector.close()
        per_worker = [worker_figures(w.http("/metrics")[1]) for w in ws]
        for w in ws:
            w.terminate()
        dead_letters = read_all(cluster.bootstrap, f"{input_topic}-dlq", partitions, 1, timeout_s=5)
    samples = sampler.samples
    settled, averages = settle_time(samples, rate, count)
    seen = {(o.partition, o.offset) for o in collector.outputs}
    answered, refused = samples[-1][1], samples[-1][2]
    after = [a for (t, a) in zip([s[0] for s in samples[WINDOW_S:]], averages, strict=False)
             if settled is not None and t >= settled]
    return {
        "rate_limit_per_s": rate, "stub_latency_ms": latency_ms, "workers": workers, "partitions": partitions,
        "fleet_requests_per_minute": rate * 60 if rpm else None,
        "records": count, "complete": complete, "drained_s": round(drained_s, 1),
        "settled_s": round(settled, 1) if settled is not None else None,
        "mean_rate_after_settling": round(sum(after) / len(after), 1) if after else None,
        "min_5s_rate_after_settling": min(after) if after else None,
        "max_5s_rate_after_settling": max(after) if after else None,
        "answered": answered, "refused_429": refused, "refused_share": round(refused / max(1, answered + refused), 3),
        "lost": count - len(seen), "duplicates": len(collector.outputs) - len(seen),
        "dead_lettered": len(dead_letters), "dlq_metric": sum(w.get("dlq", 0.0) for w in per_worker),
        "final_limits": [w.get("limit") for w in per_worker],
        "throttled_s": [round(w.get("throttled_s", 0.0), 1) for w in per_worker],
        "transient_retries": [w.get("retries", 0.0) for w in per_worker],
        "five_second_rates": averages,
    }


def markdown(result: dict[str, Any], command: str) -> str:
    rows = "\n".join(f"| {key} | {value} |" for key, value in result.items()
                     if key not in ("five_second_rates", "broker", "machine"))
    return (f"# Adaptive concurrency against a rate-limited endpoint\n\n`{command}`, {result['finished']}, "
            f"{result['broker']['description']}\n\n| figure | value |\n|---|---|\n{rows}\n\n"
            f"5-second answered rates (requests/s): {result['five_second_rates']}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.limits", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_broker_argument(parser)
    parser.add_argument("--rate", type=float, default=50.0, help="requests/s the stub answers")
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=45.0, help="backlog = rate x seconds records")
    parser.add_argument("--rpm", action="store_true", help="also configure requests_per_minute = 60 x rate")
    args = parser.parse_args(argv)
    require_broker(args.broker)
    command = "python -m bench.limits " + " ".join(argv if argv is not None else sys.argv[1:])
    result = run(args.broker, args.rate, args.latency_ms, args.seconds, args.rpm)
    result |= {"finished": report.now(), "machine": report.machine(), "broker": broker_info(args.broker)}
    name = "limits-rpm" if args.rpm else "limits"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown(result, command.strip()))
    print(markdown(result, command.strip()))
    ok = (result["complete"] and result["lost"] == 0 and result["dead_lettered"] == 0
          and result["settled_s"] is not None and result["settled_s"] <= 30)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
