"""The issue's scenarios. Each runs once on a fresh broker (``RunOptions.broker``) and returns its figures
as a flat dict.

S1  throughput, seed sentiment agent, in-process instant chat model, 1 worker, EOS + changelog; CPU/record
S2  throughput, same agent against the HTTP stub at 0 ms
S3  throughput and e2e latency at stub latency 200 ms / 1 s with --max-inflight 64 / 256 / 1024
S4  scaling 1 -> 4 workers on 16 partitions, LLM-bound
S5  restore of a large changelog into an empty state directory
S6  failover: SIGKILL one of three workers under load
S7  e2e latency at 10 records/s, 0 ms LLM
S8  worker memory (RSS) per 1,000 runs in their model calls, and with 10,000 in flight, against a 2 s stub
"""

from __future__ import annotations

import collections
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from bench.broker import DEFAULT_BROKER, DEFAULT_JIT
from bench.cluster import (
    HTTP_LLM,
    INSTANT_LLM,
    SENTIMENT_AGENT,
    SESSION_TIMEOUT_MS,
    BenchError,
    Cluster,
    Output,
    OutputCollector,
    StubProcess,
    cpu_seconds,
    machine_cpu_seconds,
    tree_cpu_seconds,
    wait_assignment,
    wait_ready,
)
from bench.peers.peer_common import percentile
from bench.profiling import Profiler
from worker.config import WorkerSettings

logger = logging.getLogger(__name__)

COMMIT_INTERVAL_MS = 100  # the worker's default, which S7's goal refers to
PEERS = ("flink_agents", "flink_agents_0_3", "quix", "naive", "asyncio")
# Peers read the first N records of the same input topic: enough for a rate, not the whole backlog.
PEER_RECORDS = {True: 500, False: 2000}
# At 200 ms per call most peers make one call at a time (~5 rec/s): enough records for a steady rate.
PEER_RECORDS_LLM_BOUND = {True: 60, False: 150}
# Peers with many model calls in flight: at 200 ms they get PEER_RECORDS, or they would be done in a second.
CONCURRENT_PEERS = ("flink_agents_0_3", "asyncio")
# Flink Agents needs an endpoint for the seed's chat model setup: it has no in-process instant model.
INSTANT_MODEL_PEERS = ("quix", "naive", "asyncio")


@dataclass
class RunOptions:
    broker: str = DEFAULT_BROKER  # bench/broker.py: kafka or tansu
    quick: bool = False
    peers: bool = False
    profile: bool = False
    stub_workers: int = 1
    # S3 at these (latency ms, max in flight) points only; None: all six.
    s3_points: tuple[tuple[int, int], ...] | None = None
    # S3's cap on the paced rate instead of the S2 rate measured first (same pace in runs to compare).
    s3_cap: float | None = None
    # Seconds of transactional load on each fresh broker before a scenario measures (bench/warmup.py).
    broker_warmup_s: float = 20.0
    broker_jit: str = DEFAULT_JIT  # bench/broker.py JIT_MODES
    results_dir: Path = Path("bench/results")
    # Figures of earlier scenarios in this run (S3 caps its expectation at the S2 rate).
    measured: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Scenarios whose peers already ran: peers run once per scenario, beside its first repeat.
    peers_done: set[str] = field(default_factory=set)


Scenario = Callable[[RunOptions], dict[str, Any]]


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _rate(outputs: list[Output], started_s: float) -> float:
    """Records per second from ``started_s`` (wall clock) to the last output's timestamp."""
    last = max(o.produced_ms for o in outputs) / 1000
    return len(outputs) / max(1e-3, last - started_s)


def _steady_rate(outputs: list[Output]) -> float:
    """Records per second between the first and the last output (excludes the ramp-up)."""
    stamps = sorted(o.produced_ms for o in outputs)
    return (len(stamps) - 1) / max(1e-3, (stamps[-1] - stamps[0]) / 1000)


def _check_complete(outputs: list[Output], expected: int, what: str) -> None:
    distinct = len({(o.partition, o.offset) for o in outputs})
    if distinct < expected:
        raise BenchError(f"{what}: {distinct} of {expected} records produced output")


def _error_summary(exc: Exception, tail: int = 600) -> str:
    """The error's first line and the end of the rest: a peer's traceback ends with the exception."""
    first, _, rest = str(exc).partition("\n")
    if len(rest) > tail:
        rest = "…" + rest[-tail:]
    return f"{first}\n{rest}" if rest else first


def _run_peers(options: RunOptions, scenario: str, cluster: Cluster, input_topic: str, partitions: int,
               count: int, llm_base_url: str, ours: float, peers: tuple[str, ...] | None = None,
               counts: dict[str, int] | None = None, extra_args: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Run each peer on the same input topic (``count`` records, or ``counts[peer]``; ``extra_args[peer]``
    added to its command line), once per ``scenario`` in a run; figures keyed ``peer_<name>_*``; skipped
    when absent."""
    if not options.peers or scenario in options.peers_done:
        return {}
    options.peers_done.add(scenario)
    try:
        from bench.peers import run_peer  # type: ignore[attr-defined]
    except ImportError as exc:
        logger.warning("--peers: bench.peers is not available (%s); skipping peers", exc)
        return {"peers": f"skipped: bench.peers not available ({exc})"}
    figures: dict[str, Any] = {}
    for name in peers or PEERS:
        output_topic = _name(f"peer-{name}-out")
        cluster.topics(output_topic, partitions=partitions)
        try:
            result = run_peer(name, bootstrap=cluster.bootstrap, input_topic=input_topic, output_topic=output_topic,
                              count=(counts or {}).get(name, count), llm_base_url=llm_base_url, model="stub",
                              timeout_s=300.0, extra_args=(extra_args or {}).get(name))
        except Exception as exc:  # noqa: BLE001 - one broken peer must not end the run
            logger.exception("peer %s failed", name)
            figures[f"peer_{name}_error"] = _error_summary(exc)
            continue
        for key, value in (result or {}).items():
            if isinstance(value, (int, float, str)) or value is None:
                figures[f"peer_{name}_{key}"] = value
        rate = (result or {}).get("records_per_s")
        if isinstance(rate, (int, float)) and rate > 0:
            figures[f"ours_vs_{name}"] = round(ours / rate, 2)
    return figures


def _throughput(options: RunOptions, scenario: str, llm: str, count: int, stub_latency_ms: float | None,
                partitions: int = 4, keys: int = 10_000) -> dict[str, Any]:
    """Drain a pre-produced backlog with one worker; rate, CPU per record, optional profile and peers."""
    with Cluster(options.broker, warmup_s=options.broker_warmup_s, jit=options.broker_jit) as cluster:
        stub = cluster.stub(stub_latency_ms, options.stub_workers) if stub_latency_ms is not None else None
        input_topic, output_topic = _name("in"), _name("out")
        cluster.topics(input_topic, output_topic, partitions=partitions)
        cluster.produce(input_topic, count, keys)
        w = cluster.worker("w1", input_topic=input_topic, output_topic=output_topic, app_id=_name("app"), llm=llm,
                           stub=stub)
        assert w.proc is not None
        ready_s = wait_ready(w, partitions)
        cpu_before = cpu_seconds(w.proc.pid)
        profiler = None
        if options.profile:
            expected_s = count / (10_000 if llm == INSTANT_LLM else 1_500)
            profiler = Profiler(w.proc.pid, max(3.0, expected_s * 0.8),
                                options.results_dir / "tmp" / f"profile-{scenario}.collapsed")
        outputs = cluster.read(output_topic, partitions, count, timeout_s=600)
        cpu_used = cpu_seconds(w.proc.pid) - cpu_before
        _check_complete(outputs, count, scenario)
        rate = _rate(outputs, ready_s)
        figures: dict[str, Any] = {
            "records": count,
            "records_per_s": round(rate),
            "steady_records_per_s": round(_steady_rate(outputs)),
            "worker_cpu_ms_per_record": round(1000 * cpu_used / count, 3),
            "worker_cpu_utilisation": round(cpu_used / max(1e-3, max(o.produced_ms for o in outputs) / 1000
                                                            - ready_s), 2),
        }
        w.terminate()
        if profiler is not None:
            summary = profiler.finish()
            if summary is not None:
                figures["profile"] = summary
        if stub is None:  # S1: the Kafka peers with an in-process instant model too
            figures.update(_run_peers(options, scenario, cluster, input_topic, partitions, count, "instant", rate,
                                      peers=INSTANT_MODEL_PEERS))
        else:
            figures.update(_run_peers(options, scenario, cluster, input_topic, partitions,
                                      min(count, PEER_RECORDS[options.quick]), stub.base_url, rate))
        return figures


def s1_instant_model(options: RunOptions) -> dict[str, Any]:
    """Sentiment agent, in-process instant chat model, 1 worker, EOS + changelog: rate and CPU per record."""
    return _throughput(options, "S1", INSTANT_LLM, 30_000 if options.quick else 100_000, None)


def s2_stub_0ms(options: RunOptions) -> dict[str, Any]:
    """Sentiment agent against the HTTP stub at 0 ms (real openai client), 1 worker."""
    return _throughput(options, "S2", HTTP_LLM, 6_000 if options.quick else 12_000, 0)


def _harness_cpu(cluster: Cluster, stub: StubProcess) -> dict[str, float]:
    """CPU seconds so far of what runs beside the worker: the stub, the broker, this benchmark process."""
    assert cluster.broker is not None and stub.proc is not None
    own = os.times()
    return {"stub": tree_cpu_seconds(stub.proc.pid), "broker": sum(cpu_seconds(p) for p in cluster.broker.pids),
            "bench": own.user + own.system}


def machine_bound_per_s(cores: int, cpu_s_per_record: float) -> float:
    """The most records per second the machine's cores give at this CPU cost per record, summed over
    every process it takes (worker, stub, broker, load generator and reader): where a paced rate that
    falls short of its expectation with the machine busy is bound. A little low: the CPU is counted over
    the whole point, ramp and drain included, and the rate over its steady part."""
    return cores / cpu_s_per_record if cpu_s_per_record > 0 else float("inf")


def s3_latency_bound(options: RunOptions) -> dict[str, Any]:
    """Paced input at the expected capacity min(max-inflight / latency, S2 steady rate); what comes out, how fast."""
    if options.s3_cap is not None:
        options.measured["S2"] = {"records_per_s": options.s3_cap}
    elif "S2" not in options.measured:
        # The expectation is capped at this machine's S2 rate: measure it when S2 did not run.
        options.measured["S2"] = _throughput(replace(options, peers=False, profile=False), "S2", HTTP_LLM, 4_000, 0)
    # The CPU limit of the issue's min(max-inflight / latency, CPU limit) is S2's steady rate: its
    # records_per_s counts the start-up ramp from ready to the first output too: 6-10% below the rate the
    # worker sustains once running (bench/results/latest.json, full runs), which set the expectation low.
    s2 = options.measured["S2"]
    s2_rate = s2.get("steady_records_per_s") or s2["records_per_s"]
    seconds = 4.0 if options.quick else 8.0
    figures: dict[str, Any] = {"s2_rate_used": s2_rate}
    ratios = []
    points = options.s3_points or tuple((ms, n) for ms in (200, 1000) for n in (64, 256, 1024))
    for latency_ms, inflight in points:
        expected = min(inflight / (latency_ms / 1000), s2_rate)
        tag = f"{latency_ms}ms_mi{inflight}"
        with Cluster(options.broker, warmup_s=options.broker_warmup_s, jit=options.broker_jit) as cluster:
            stub = cluster.stub(latency_ms, options.stub_workers)
            input_topic, output_topic = _name("in"), _name("out")
            cluster.topics(input_topic, output_topic, partitions=4)
            w = cluster.worker("w1", input_topic=input_topic, output_topic=output_topic, app_id=_name("app"),
                               llm=HTTP_LLM, stub=stub, max_inflight=inflight)
            wait_ready(w, 4)
            collector = cluster.collector(output_topic, 4)
            # Where the CPU went: a shortfall at high rates is the 2 cores running out (worker, LLM
            # stub, broker, load generator and reader share them), not the in-flight window.
            worker_cpu, (busy, total) = cpu_seconds(w.proc.pid), machine_cpu_seconds()  # type: ignore[union-attr]
            others = _harness_cpu(cluster, stub)
            # The highest-rate case is the one that runs short of the ceiling: profile it.
            profiler = Profiler(w.proc.pid, seconds, options.results_dir / "tmp" / f"profile-S3-{tag}.collapsed") \
                if options.profile and tag == "200ms_mi1024" else None
            try:
                count = cluster.produce_paced(input_topic, expected, seconds, keys=100_000)
                # A slower worker is a figure, not an error: wait long enough for ~1/3 of the rate.
                collector.wait_for(count, timeout_s=seconds * 3 + latency_ms / 1000 + 20, alive=w.running)
                worker_cpu = cpu_seconds(w.proc.pid) - worker_cpu  # type: ignore[union-attr]
                busy_after, total_after = machine_cpu_seconds()
                others = {name: used - others[name] for name, used in _harness_cpu(cluster, stub).items()}
            finally:
                collector.close()
            if profiler is not None:
                summary = profiler.finish()
                if summary is not None:
                    figures["profile"] = summary
            figures[f"{tag}_worker_cpu_ms_per_record"] = round(1000 * worker_cpu / max(1, count), 3)
            figures[f"{tag}_machine_cpu_busy"] = round((busy_after - busy) / max(1e-9, total_after - total), 2)
            # The rest of the machine's CPU per record: the stub, the broker and this process (load
            # generator and reader); what remains of busy is py-spy and anything else running.
            for name, used in others.items():
                figures[f"{tag}_{name}_cpu_ms_per_record"] = round(1000 * used / max(1, count), 3)
            figures[f"{tag}_machine_bound_per_s"] = round(machine_bound_per_s(
                os.cpu_count() or 1, (worker_cpu + sum(others.values())) / max(1, count)), 1)
            outputs = collector.outputs
            if not w.running():
                raise BenchError(f"S3 {tag}: the worker died\n{w.log()}")
            figures[f"{tag}_missing"] = count - len({(o.partition, o.offset) for o in outputs})
            rate = _steady_rate(outputs)
            latencies = _e2e_ms(cluster, input_topic, outputs)
            figures[f"{tag}_expected_per_s"] = round(expected, 1)
            figures[f"{tag}_records_per_s"] = round(rate, 1)
            figures[f"{tag}_ratio"] = round(rate / expected, 3)
            figures[f"{tag}_e2e_p50_ms"] = percentile(latencies, 50)
            figures[f"{tag}_e2e_p99_ms"] = percentile(latencies, 99)
            ratios.append(rate / expected)
            w.terminate()
            if latency_ms == 200 and inflight == 256:
                figures.update({f"{tag}_{k}": v for k, v in _run_peers(
                    options, "S3", cluster, input_topic, 4, min(count, PEER_RECORDS_LLM_BOUND[options.quick]),
                    stub.base_url, rate,
                    counts={p: min(count, PEER_RECORDS[options.quick]) for p in CONCURRENT_PEERS}).items()})
            elif latency_ms == 200 and inflight == 1024:
                # Ours at its widest window against the peers whose window can widen too. The others make
                # one call at a time, so 1,024 would not change them. Flink Agents 0.3.1 keeps its best
                # setting (32 async threads: more were slower on 2 cores, bench/peers/README.md).
                figures.update({f"{tag}_{k}": v for k, v in _run_peers(
                    options, "S3@1024", cluster, input_topic, 4, min(count, PEER_RECORDS[options.quick]),
                    stub.base_url, rate, peers=CONCURRENT_PEERS,
                    extra_args={"asyncio": ["--max-inflight", str(inflight)]}).items()})
    figures["min_ratio"] = round(min(ratios), 3)
    return figures


def _input_timestamps(cluster: Cluster, topic: str, partitions: int, count: int) -> dict[tuple[int, int], int]:
    """(partition, offset) -> create timestamp (ms) of the input records."""
    from tests.worker.integration.harness import read_all

    return {(m.partition(), m.offset()): m.timestamp()[1]
            for m in read_all(cluster.bootstrap, topic, partitions, count, timeout_s=60, isolation="read_uncommitted")}


def _e2e_ms(cluster: Cluster, input_topic: str, outputs: list[Output], partitions: int = 4) -> list[float]:
    """Input create time -> the benchmark's read_committed reader received the output, per record."""
    created = _input_timestamps(cluster, input_topic, partitions, len(outputs))
    return [round(o.received_s * 1000 - created[(o.partition, o.offset)], 1)
            for o in outputs if (o.partition, o.offset) in created]


def s4_scaling(options: RunOptions) -> dict[str, Any]:
    """1 worker, then 4 workers, on 16 partitions against a 500 ms stub with --max-inflight 64 each."""
    latency_ms, inflight, partitions = 500, 64, 16
    per_worker = inflight / (latency_ms / 1000)
    seconds = 5.0 if options.quick else 10.0
    figures: dict[str, Any] = {"stub_latency_ms": latency_ms, "max_inflight": inflight}
    rates = {}
    for workers in (1, 4):
        count = int(per_worker * workers * seconds)
        with Cluster(options.broker, warmup_s=options.broker_warmup_s, jit=options.broker_jit) as cluster:
            stub = cluster.stub(latency_ms, options.stub_workers)
            input_topic, output_topic, app = _name("in"), _name("out"), _name("app")
            cluster.topics(input_topic, output_topic, partitions=partitions)
            ws = [cluster.worker(f"w{i}", input_topic=input_topic, output_topic=output_topic, app_id=app,
                                 llm=HTTP_LLM, stub=stub, max_inflight=inflight) for i in range(workers)]
            wait_assignment(ws, partitions)
            collector = cluster.collector(output_topic, partitions)
            try:
                started = time.time()
                cluster.produce(input_topic, count, keys=100_000)
                if not collector.wait_for(count, timeout_s=seconds * 6 + 30):
                    raise BenchError(f"S4 {workers} workers: {len(collector.outputs)} of {count} outputs")
            finally:
                collector.close()
            _check_complete(collector.outputs, count, f"S4 {workers} workers")
            rates[workers] = _rate(collector.outputs, started)
            figures[f"workers_{workers}_records_per_s"] = round(rates[workers], 1)
            for w in ws:
                w.terminate()
    figures["expected_per_worker_per_s"] = per_worker
    figures["speedup"] = round(rates[4] / rates[1], 2)
    return figures


def s5_restore(options: RunOptions) -> dict[str, Any]:
    """Fill the changelog with N keys, then start a worker on an empty state directory."""
    keys = 200_000 if options.quick else 1_000_000
    partitions = 4
    with Cluster(options.broker, warmup_s=options.broker_warmup_s, jit=options.broker_jit) as cluster:
        app = _name("app")
        input_topic, output_topic = _name("in"), _name("out")
        changelog = WorkerSettings(agent=SENTIMENT_AGENT, input_topic=input_topic, output_topic=output_topic,
                                   app_id=app).changelog_topic
        cluster.topics(input_topic, output_topic, partitions=partitions)
        cluster.admin.create_topic(changelog, partitions, {"cleanup.policy": "compact"})
        producer = Producer({"bootstrap.servers": cluster.bootstrap, "linger.ms": 20, "batch.num.messages": 10000,
                             "queue.buffering.max.messages": 2_000_000})
        for i in range(keys):
            producer.produce(changelog, b'{"m":{"id":"r%d"},"p":%d}' % (i, i), b"r%d" % i, partition=i % partitions)
            if i % 50_000 == 0:
                producer.poll(0)
        if producer.flush(300) != 0:
            raise BenchError("could not fill the changelog")
        w = cluster.worker("w1", input_topic=input_topic, output_topic=output_topic, app_id=app, llm=INSTANT_LLM)
        wait_ready(w, partitions, timeout_s=600)
        restored = w.metric("agentfleet_restore_records_total")
        # Partitions restore in parallel threads: the wall time is the slowest partition's.
        seconds = [float(s) for s in re.findall(r"restored \d+ changelog records in ([0-9.]+)s",
                                                      w.log_path.read_text(errors="replace"))]
        w.terminate()
    wall = max(seconds) if seconds else None
    return {"changelog_records": keys, "restored_records": int(restored), "partitions": partitions,
            "restore_wall_s": wall, "records_per_s": round(restored / wall) if wall else None}


def s6_failover(options: RunOptions) -> dict[str, Any]:
    """3 workers, 6 partitions, paced load through a 50 ms stub; SIGKILL one; time until its partitions
    produce output again, and whether every input got its output.

    Tansu (``--broker tansu``) never times out a transaction its killed producer left open, and
    read_committed readers stall at it (BROKER.md); Apache Kafka aborts it after transaction.timeout.ms.
    When that happens the victim is restarted under its instance id, whose init_transactions aborts it,
    and the outputs are read then. The resume time comes from the outputs' own timestamps, so it is
    unaffected. The aborted records, which Tansu still delivers, are counted apart from other duplicates.
    """
    partitions, rate = 6, 100.0
    before_s, after_s = (4.0, 16.0) if options.quick else (6.0, 20.0)
    with Cluster(options.broker, warmup_s=options.broker_warmup_s, jit=options.broker_jit) as cluster:
        stub = cluster.stub(50, options.stub_workers)
        input_topic, output_topic, app = _name("in"), _name("out"), _name("app")
        cluster.topics(input_topic, output_topic, partitions=partitions)

        def start(instance: str) -> Any:
            return cluster.worker(instance, input_topic=input_topic, output_topic=output_topic, app_id=app,
                                  llm=HTTP_LLM, stub=stub)

        ws = [start(f"w{i}") for i in range(3)]
        wait_assignment(ws, partitions)
        collector = cluster.collector(output_topic, partitions)
        produced: list[int] = []
        feeder = threading.Thread(target=lambda: produced.append(
            cluster.produce_paced(input_topic, rate, before_s + after_s, keys=1_000)))
        feeder.start()
        unblocked = False
        try:
            time.sleep(before_s)  # load runs on its own thread; this is the pre-kill phase length
            victim = ws[0]
            prefix = f"{app}-{victim.instance_id}"
            owned = {o.partition for o in collector.outputs if o.producer == prefix}
            killed_at = time.time()
            victim.kill()
            feeder.join()
            count = produced[0]
            complete = collector.wait_for(count, timeout_s=20)
            if not complete:
                unblocked = True
                ws.append(start(victim.instance_id))
                complete = collector.wait_for(count, timeout_s=60)
        finally:
            collector.close()
        outputs = collector.outputs
        resumed = [o.produced_ms / 1000 for o in outputs
                   if o.partition in owned and o.producer != prefix and o.produced_ms / 1000 > killed_at]
        seen = {(o.partition, o.offset) for o in outputs}
        # A victim's output seen twice: an aborted record of its open transaction plus the redo.
        counts = collections.Counter((o.partition, o.offset) for o in outputs)
        from_victim = sum(1 for o in outputs if counts[(o.partition, o.offset)] > 1 and o.producer == prefix
                          and o.produced_ms / 1000 <= killed_at)
        cluster_inputs = _input_timestamps(cluster, input_topic, partitions, count) if not complete else {}
        for w in ws[1:]:
            w.terminate()
        if not complete:
            logs = cluster.keep_logs(options.results_dir / "tmp" / f"S6-logs-{time.strftime('%H%M%S')}")
    return {
        "records": count,
        "victim_partitions": sorted(owned),
        "resume_s": round(min(resumed) - killed_at, 2) if resumed else None,
        "session_timeout_s": SESSION_TIMEOUT_MS / 1000,
        "lost": count - len(seen),
        "duplicates_aborted_by_victim": from_victim,
        "duplicates_other": len(outputs) - len(seen) - from_victim,
        "victim_restarted_to_end_open_txn": unblocked,
        "complete": complete,
        **({} if complete else {"missing_by_partition": _missing_by_partition(cluster_inputs, seen),
                                "logs": str(logs)}),
    }


def _missing_by_partition(inputs: dict[tuple[int, int], int], seen: set[tuple[int, int]]) -> str:
    """``partition: count (first offset)`` of inputs without output, e.g. to tell a stall from a gap."""
    missing: dict[int, list[int]] = {}
    for partition, offset in inputs:
        if (partition, offset) not in seen:
            missing.setdefault(partition, []).append(offset)
    return ", ".join(f"{p}: {len(o)} (from {min(o)})" for p, o in sorted(missing.items()))


def s7_low_rate_latency(options: RunOptions) -> dict[str, Any]:
    """10 records/s through the 0 ms HTTP stub; e2e latency from input create time to the reader."""
    seconds = 10.0 if options.quick else 20.0
    with Cluster(options.broker, warmup_s=options.broker_warmup_s, jit=options.broker_jit) as cluster:
        stub = cluster.stub(0, options.stub_workers)
        input_topic, output_topic = _name("in"), _name("out")
        cluster.topics(input_topic, output_topic, partitions=4)
        w = cluster.worker("w1", input_topic=input_topic, output_topic=output_topic, app_id=_name("app"),
                           llm=HTTP_LLM, stub=stub)
        wait_ready(w, 4)
        floor = _broker_hop_ms(cluster, seconds / 2)
        count, outputs = _paced_at_ten_per_s(cluster, input_topic, output_topic, seconds, timeout_s=30)
        _check_complete(outputs, count, "S7")
        latencies = _e2e_ms(cluster, input_topic, outputs)
        created = _input_timestamps(cluster, input_topic, 4, count)
        # Input created -> output record created (the worker produces outputs inside its commit).
        to_output = [o.produced_ms - created[(o.partition, o.offset)] for o in outputs
                     if (o.partition, o.offset) in created]
        commits = w.metric("agentfleet_transactions_committed_total")
        commit_ms = 1000 * w.metric("agentfleet_commit_duration_seconds_sum") / max(1.0, commits)
        w.terminate()
    return {"records": count, "commit_interval_ms": COMMIT_INTERVAL_MS, "e2e_p50_ms": percentile(latencies, 50),
            "e2e_p99_ms": percentile(latencies, 99), "e2e_max_ms": max(latencies),
            "input_to_output_record_p50_ms": percentile(to_output, 50),
            "input_to_output_record_p99_ms": percentile(to_output, 99),
            "commit_mean_ms": round(commit_ms, 1), "transactions": int(commits),
            "broker_hop_p50_ms": floor[0], "broker_hop_p99_ms": floor[1]}


def _broker_hop_ms(cluster: Cluster, seconds: float) -> tuple[float | None, float | None]:
    """The broker alone: plain records at 10/s, create time -> the same reader's receipt (p50, p99).

    e2e crosses this hop twice (input to the worker, output to the reader), so it bounds S7 from below.
    """
    topic = _name("hop")
    cluster.topics(topic, partitions=4)
    _count, outputs = _paced_at_ten_per_s(cluster, topic, topic, seconds, timeout_s=20)
    hops = [o.received_s * 1000 - o.produced_ms for o in outputs]
    return percentile(hops, 50), percentile(hops, 99)


def _paced_at_ten_per_s(cluster: Cluster, input_topic: str, output_topic: str, seconds: float,
                        timeout_s: float) -> tuple[int, list[Output]]:
    """Produce 10 records/s for ``seconds`` and collect what reaches ``output_topic`` (4 partitions)."""
    collector = cluster.collector(output_topic, 4)
    try:
        count = cluster.produce_paced(input_topic, 10.0, seconds, keys=1_000)
        collector.wait_for(count, timeout_s=timeout_s)
    finally:
        collector.close()
    return count, collector.outputs


WIDE_HTTP_LLM = "bench.agents:wide_http_llm_descriptor"
S8_BURSTS = (1_000, 3_000)
S8_WINDOW = 10_000
S8_LEVELS = (1_000, 5_000, 10_000)
# The README's memory budget for the default 1,024 runs at once: 100 MB + 45 MB per 1,000 runs in their
# model calls + 10 MB per 1,000 records waiting for a run slot.
S8_BUDGET_MB = round(100 + 45 * 1.024 + 10 * (S8_WINDOW - 1024) / 1000)


def s8_memory(options: RunOptions) -> dict[str, Any]:
    """Worker RSS per 1,000 records in flight, and with 10,000 in flight, against a 2 s stub.

    1. Every record in its model call: a worker with runs and connections unbounded takes bursts of
       1,000 and 3,000 records; RSS at each burst's in-flight peak gives the memory per run in a call.
       (At 2 s a worker holds at most its intake rate x 2 s in calls: 10,000 would need 5,000 calls/s.)
    2. 10,000 in flight: --max-inflight 10000 with the default 1,024 runs at once, a backlog to fill it;
       RSS as the window passes 1,000, 5,000 and 10,000 (the records past 1,024 wait for a run slot).
    """
    latency_ms = 2000
    with Cluster(options.broker, warmup_s=options.broker_warmup_s, jit=options.broker_jit) as cluster:
        stub = cluster.stub(latency_ms, options.stub_workers)
        figures: dict[str, Any] = {"stub_latency_ms": latency_ms}
        w, input_topic, collector = _s8_worker(cluster, stub, {"AGENTPLAN_MAX_CONCURRENT_RUNS": str(S8_WINDOW)})
        points = [(0.0, w.rss_mb())]
        figures["rss_mb_0"] = round(points[0][1], 1)
        produced = 0
        try:
            for burst in S8_BURSTS:
                cluster.produce(input_topic, burst, keys=100_000, start=produced)
                produced += burst
                peak, rss = _peak_in_flight(w, burst, timeout_s=60)
                points.append((peak, rss))
                figures[f"burst_{burst}_in_calls"] = int(peak)
                figures[f"burst_{burst}_rss_mb"] = round(rss, 1)
                if not collector.wait_for(produced, timeout_s=120, alive=w.running):
                    raise BenchError(f"S8: {len(collector.outputs)} of {produced} outputs\n{w.log()}")
        finally:
            collector.close()
        w.kill()
        (low_n, low_rss), (high_n, high_rss) = points[1], points[-1]
        per_call = 1000 * (high_rss - low_rss) / max(1.0, high_n - low_n)
        figures["rss_mb_per_1000_in_calls"] = round(per_call, 1)

        w, input_topic, collector = _s8_worker(cluster, stub, {})
        collector.close()
        figures["window_rss_mb_0"] = round(w.rss_mb(), 1)
        cluster.produce(input_topic, S8_WINDOW + 2_000, keys=100_000)
        deadline, levels, peak = time.monotonic() + 90, list(S8_LEVELS), 0.0
        while levels and time.monotonic() < deadline and w.running():
            inflight = w.metric("agentfleet_inflight_records")
            peak = max(peak, inflight)
            while levels and inflight >= levels[0]:
                figures[f"window_rss_mb_{levels.pop(0)}"] = round(w.rss_mb(), 1)
            time.sleep(0.05)
        figures["window_inflight_peak"] = int(peak)
        running = min(1024, S8_WINDOW)
        if f"window_rss_mb_{S8_WINDOW}" in figures:
            waiting = figures[f"window_rss_mb_{S8_WINDOW}"] - figures["window_rss_mb_0"] - per_call * running / 1000
            figures["rss_mb_per_1000_waiting"] = round(1000 * waiting / (S8_WINDOW - running), 1)
        w.kill()
    return figures


def _s8_worker(cluster: Cluster, stub: Any, env: dict[str, str]) -> tuple[Any, str, OutputCollector]:
    input_topic, output_topic = _name("in"), _name("out")
    cluster.topics(input_topic, output_topic, partitions=4)
    w = cluster.worker(f"w{len(cluster.workers) + 1}", input_topic=input_topic, output_topic=output_topic,
                       app_id=_name("app"), llm=WIDE_HTTP_LLM, stub=stub, max_inflight=S8_WINDOW, env=env)
    wait_ready(w, 4)
    return w, input_topic, cluster.collector(output_topic, 4)


def _peak_in_flight(w: Any, level: int, timeout_s: float) -> tuple[float, float]:
    """Sample the worker's in-flight gauge and RSS until ``level`` records are in flight, or the count falls
    back (runs finish faster than they start); (peak in flight, RSS at the peak)."""
    deadline = time.monotonic() + timeout_s
    peak, rss = 0.0, w.rss_mb()
    while time.monotonic() < deadline:
        inflight = w.metric("agentfleet_inflight_records")
        if inflight > peak:
            peak, rss = inflight, w.rss_mb()
        elif peak > 0 and inflight < peak * 0.9:
            break
        if peak >= level:
            break
        time.sleep(0.05)
    return peak, rss


SCENARIOS: dict[str, Scenario] = {
    "S1": s1_instant_model,
    "S2": s2_stub_0ms,
    "S3": s3_latency_bound,
    "S4": s4_scaling,
    "S5": s5_restore,
    "S6": s6_failover,
    "S7": s7_low_rate_latency,
    "S8": s8_memory,
}


@dataclass(frozen=True)
class Goal:
    scenario: str
    figure: str
    target: float
    direction: str  # "min": the figure must be >= target; "max": <= target
    text: str
    baseline: str | None = None  # an earlier measurement, for the table
    worst: bool = False  # judge the worst run, not the median (a loss in any run is a loss)

    def ratio(self, value: float | None) -> float | None:
        """>= 1 means the goal holds."""
        if value is None:
            return None
        if self.direction == "min":
            return value / self.target
        return self.target / value if value > 0 else float("inf")


GOALS: list[Goal] = [
    Goal("S1", "records_per_s", 10_000, "min", "rec/s, sentiment agent, in-process instant model, 1 worker, EOS",
         "8.8-10.9k (echo agent, no LLM)"),
    Goal("S2", "records_per_s", 2_000, "min", "rec/s, same agent vs HTTP stub at 0 ms, 1 worker", "277-348"),
    Goal("S3", "min_ratio", 0.9, "min", "worst of 6: rate / min(max-inflight/latency, S2 steady rate)"),
    Goal("S4", "speedup", 3.6, "min", "4 workers vs 1 on 16 partitions, LLM-bound"),
    Goal("S5", "records_per_s", 100_000, "min", "rec/s restoring the changelog into an empty state dir", "9,257"),
    Goal("S6", "resume_s", SESSION_TIMEOUT_MS / 1000 + 5, "max", "s from SIGKILL until its partitions output again"),
    Goal("S6", "lost", 0, "max", "input records without output after failover (worst run)", worst=True),
    Goal("S7", "e2e_p50_ms", 20, "max", "ms e2e p50 at 10 rec/s, 0 ms LLM"),
    Goal("S7", "e2e_p99_ms", COMMIT_INTERVAL_MS + 50, "max", "ms e2e p99 at 10 rec/s (commit interval + 50)"),
    Goal("S8", "window_inflight_peak", S8_WINDOW, "min", "records in flight at once in one worker, 2 s stub"),
    Goal("S8", "window_rss_mb_10000", S8_BUDGET_MB, "max",
         "MB worker RSS with 10,000 in flight (README budget: 100 + 45/1k in calls + 10/1k waiting)"),
]
