"""The Grafana dashboard and the Prometheus alert rules read only metrics and labels that a
running worker exports, and the committed dashboard JSON is what its generator produces."""

from __future__ import annotations

import importlib.util
import json
import re
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentplan.testing.llm_stub import StubLLMServer
from tests.deploy.deploy_files import DASHBOARD_DIR, REPO, metric_families, promql_expressions
from tests.worker.integration.harness import WorkerProcess
from worker.observability.metrics import METRIC_NAMES, WorkerMetrics

TARGET_LABELS = {"instance", "job", "le"}  # added by Prometheus, or histogram buckets
_GROUPING = re.compile(r"\b(?:by|on|without|group_left|group_right)\s*\(([^)]*)\)")
_MATCHER = re.compile(r"\{([^{}]*)\}")
_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def label_names(metric_family: str) -> set[str]:
    metric = getattr(WorkerMetrics(), metric_family.removeprefix("agentfleet_"))
    return set(metric._labelnames)


def labels_used(expression: str) -> set[str]:
    used = {name.strip() for group in _GROUPING.findall(expression) for name in group.split(",") if name.strip()}
    for matchers in _MATCHER.findall(expression):
        used |= {m.split("=")[0].strip().rstrip("!~") for m in matchers.split(",") if "=" in m}
    return used


def test_committed_dashboard_is_what_the_generator_builds():
    spec = importlib.util.spec_from_file_location("build_dashboard", REPO / "deploy/grafana/build_dashboard.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (DASHBOARD_DIR / "agentfleet.json").read_text() == module.render(), \
        "run: python deploy/grafana/build_dashboard.py"


def test_every_expression_reads_worker_metrics():
    for where, expression in promql_expressions().items():
        if "agentfleet_" not in expression:
            assert "up{" in expression, where  # the only non-worker series used
            continue
        assert metric_families(expression) <= set(METRIC_NAMES), where


def test_labels_in_expressions_and_legends_exist_on_their_metrics():
    legends = {}
    for path in DASHBOARD_DIR.glob("*.json"):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                legends[f"{path.name}: {panel['title']} [{target['refId']}]"] = target["legendFormat"]
    for where, expression in promql_expressions().items():
        available = set(TARGET_LABELS)
        for family in metric_families(expression):
            available |= label_names(family)
        used = labels_used(expression) | set(_LEGEND.findall(legends.get(where, "")))
        assert used <= available, f"{where}: labels {used - available} are on none of its metrics"


def test_dashboard_covers_what_operators_watch():
    read = set().union(*(metric_families(e) for e in promql_expressions().values()))
    for needed in ("agentfleet_records_in_total", "agentfleet_records_out_total",
                   "agentfleet_end_to_end_latency_seconds", "agentfleet_llm_request_duration_seconds",
                   "agentfleet_llm_errors_total", "agentfleet_llm_tokens_total",
                   "agentfleet_inflight_records", "agentfleet_key_queue_depth", "agentfleet_consumer_lag",
                   "agentfleet_transactions_committed_total", "agentfleet_transactions_aborted_total",
                   "agentfleet_restoring_partitions", "agentfleet_dlq_records_total", "agentfleet_rebalances_total"):
        assert needed in read, needed


@pytest.mark.integration
def test_a_running_worker_exports_every_metric_the_dashboards_and_alerts_read(kafka, tmp_path: Path):
    input_topic = kafka.new_topic("deploy-metrics-in", partitions=2)
    output_topic = kafka.new_topic("deploy-metrics-out", partitions=2)
    with StubLLMServer() as stub:
        worker = WorkerProcess(kafka.bootstrap_servers, "examples.sentiment.sentiment_agent:SentimentAnalysisAgent",
                               input_topic, output_topic, f"app-{uuid.uuid4().hex[:8]}", tmp_path / "state", "w0",
                               tmp_path, env={"OPENAI_BASE_URL": stub.base_url, "OPENAI_API_KEY": "test"},
                               extra_args=["--resource",
                                           "local_llm=examples.sentiment.custom_types:local_llm_descriptor"]).start()
        try:
            worker.wait_ready()
            status, body = worker.http("/metrics")
        finally:
            worker.terminate()
    assert status == 200
    exported = set()
    for family in text_string_to_metric_families(body):
        exported.add(family.name + "_total" if family.type == "counter" else family.name)
    read = set().union(*(metric_families(e) for e in promql_expressions().values()))
    assert read <= exported, f"read but not exported: {sorted(read - exported)}"
