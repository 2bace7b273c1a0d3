"""Generates deploy/grafana/dashboards/agentfleet.json from the panel list below.

Edit the panels here and run ``python deploy/grafana/build_dashboard.py``; a test fails when the
committed JSON and this file disagree, and another checks every metric against a live worker.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

OUTPUT = Path(__file__).parent / "dashboards" / "agentfleet.json"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
RATE = "$__rate_interval"


class Panel(NamedTuple):
    title: str
    unit: str
    targets: list[tuple[str, str]]  # (PromQL, legend)
    description: str = ""


def quantiles(histogram: str, by: str = "") -> list[tuple[str, str]]:
    group = f"le{', ' + by if by else ''}"
    suffix = f" {{{{{by}}}}}" if by else ""
    return [(f"histogram_quantile({q}, sum by ({group}) (rate({histogram}_bucket[{RATE}])))",
             f"p{int(q * 100)}{suffix}") for q in (0.5, 0.99)]


ROWS: list[tuple[str, list[Panel]]] = [
    ("Flow", [
        Panel("Throughput in / out", "rps", [
            ("sum(rate(agentfleet_records_in_total[$__rate_interval]))", "in"),
            ("sum by (topic) (rate(agentfleet_records_out_total[$__rate_interval]))", "out {{topic}}"),
        ], "Input records consumed and output records committed per second, all workers."),
        Panel("End-to-end latency", "s", quantiles("agentfleet_end_to_end_latency_seconds"),
              "From the input record's timestamp to the commit of its outputs."),
        Panel("Consumer lag per partition", "short", [
            ("max by (topic, partition) (agentfleet_consumer_lag)", "{{topic}}[{{partition}}]"),
        ], "Records behind the end of each input partition."),
        Panel("Dead-lettered records", "rps", [
            ("sum by (reason) (rate(agentfleet_dlq_records_total[$__rate_interval]))", "{{reason}}"),
        ], "Records sent to the dead-letter topic, by reason."),
    ]),
    ("LLM", [
        Panel("LLM request latency", "s", quantiles("agentfleet_llm_request_duration_seconds", "model")),
        Panel("LLM requests and errors", "rps", [
            ("sum by (model, outcome) (rate(agentfleet_llm_requests_total[$__rate_interval]))",
             "{{model}} {{outcome}}"),
            ("sum by (kind) (rate(agentfleet_llm_errors_total[$__rate_interval]))", "error {{kind}}"),
            ("sum by (kind) (rate(agentfleet_transient_retries_total[$__rate_interval]))", "retry {{kind}}"),
        ]),
        Panel("LLM tokens", "short", [
            ("sum by (model, type) (rate(agentfleet_llm_tokens_total[$__rate_interval]))", "{{model}} {{type}}"),
        ], "Tokens per second by model and type (prompt, completion)."),
        Panel("Run and action duration", "s",
              quantiles("agentfleet_run_duration_seconds")
              + quantiles("agentfleet_action_duration_seconds", "action")),
        Panel("Model endpoint limits and fallbacks", "short", [
            ("sum by (endpoint) (agentfleet_llm_concurrency_limit)", "limit {{endpoint}}"),
            ("sum by (endpoint) (agentfleet_llm_inflight_requests)", "in flight {{endpoint}}"),
            ("sum by (endpoint) (rate(agentfleet_llm_throttled_seconds_total[$__rate_interval]))",
             "calls waiting {{endpoint}}"),
            ("sum by (setup, fallback) (rate(agentfleet_llm_fallbacks_total[$__rate_interval]))",
             "fallback/s {{setup}} -> {{fallback}}"),
        ], "Adaptive concurrency limits summed over workers, calls holding or waiting for a permit, and calls "
           "answered by a fallback setup."),
    ]),
    ("Concurrency", [
        Panel("In-flight records and key queues", "short", [
            ("sum by (instance) (agentfleet_inflight_records)", "in flight {{instance}}"),
            ("sum by (instance) (agentfleet_inflight_limit)", "limit {{instance}}"),
            ("sum by (instance) (agentfleet_key_queue_depth)", "queued behind a key {{instance}}"),
            ("sum by (instance) (agentfleet_active_keys)", "active keys {{instance}}"),
        ]),
        Panel("Partitions per worker", "short", [
            ("sum by (instance_id) (agentfleet_assigned_partitions * on (instance) group_left (instance_id)"
             " agentfleet_worker_info)", "assigned {{instance_id}}"),
            ("sum by (instance) (agentfleet_paused_partitions)", "paused {{instance}}"),
        ], "Assignment across the group; paused partitions mean backpressure (in-flight window full)."),
        Panel("Rebalances", "short", [
            ("sum by (event) (increase(agentfleet_rebalances_total[5m]))", "{{event}}"),
        ], "Partition assignment callbacks over 5 minutes."),
        Panel("Action errors", "rps", [
            ("sum by (action, kind) (rate(agentfleet_action_errors_total[$__rate_interval]))", "{{action}} {{kind}}"),
            ("sum by (reason) (rate(agentfleet_records_skipped_total[$__rate_interval]))", "skipped {{reason}}"),
        ]),
    ]),
    ("Transactions and state", [
        Panel("Commits and aborts", "ops", [
            ("sum(rate(agentfleet_transactions_committed_total[$__rate_interval]))", "committed"),
            ("sum(rate(agentfleet_transactions_aborted_total[$__rate_interval]))", "aborted"),
        ]),
        Panel("Commit duration", "s", quantiles("agentfleet_commit_duration_seconds")),
        Panel("Time since last commit", "s", [
            ("time() - max by (instance) (agentfleet_last_commit_timestamp_seconds)", "{{instance}}"),
        ]),
        Panel("State restore", "short", [
            ("sum by (instance) (agentfleet_restoring_partitions)", "restoring partitions {{instance}}"),
            ("sum by (instance) (rate(agentfleet_restore_records_total[$__rate_interval]))",
             "changelog records/s {{instance}}"),
            ("histogram_quantile(0.99, sum by (le) (rate(agentfleet_restore_duration_seconds_bucket[1h])))",
             "p99 partition restore (s)"),
        ]),
    ]),
]


def build() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    next_id = 1
    y = 0
    for row_title, row_panels in ROWS:
        panels.append({"id": next_id, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        next_id += 1
        y += 1
        for index, panel in enumerate(row_panels):
            panels.append({
                "id": next_id,
                "type": "timeseries",
                "title": panel.title,
                "description": panel.description,
                "datasource": DATASOURCE,
                "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": y + 8 * (index // 2)},
                "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                            "tooltip": {"mode": "multi", "sort": "desc"}},
                "targets": [{"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr,
                             "legendFormat": legend} for i, (expr, legend) in enumerate(panel.targets)],
            })
            next_id += 1
        y += 8 * ((len(row_panels) + 1) // 2)
    return {
        "uid": "agentfleet",
        "title": "Kafka Agent Fleet",
        "tags": ["agentfleet", "kafka", "llm"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "editable": True,
        "panels": panels,
        "templating": {"list": []},
        "annotations": {"list": []},
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}")
