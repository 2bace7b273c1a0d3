"""A real Prometheus (Debian's, installed by .ci/run) scrapes a live worker: every dashboard query and
every alert expression evaluates through its HTTP API, and the series they read are there.

The scenario gives the worker something to report: model calls, two failed ones (errors and
transient retries), and an input that is not JSON (a dead letter).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_files import ALERTS_FILE, metric_families, promql_expressions
from tests.worker.integration.harness import read_all, wait_for
from worker.kafka.embedded import free_port

pytestmark = pytest.mark.integration

# Series a worker exports only once the event they count has happened (a labelled counter has no
# series before its first label set). This scenario does not make them happen; other integration
# tests cover each. Every other series the dashboards and alerts read must be there.
EVENT_ONLY = {
    "agentfleet_records_lost_to_retention_total",  # test_input_retention.py
    "agentfleet_action_errors_total",  # an action that raises: test_llm_fault_matrix.py
    "agentfleet_records_skipped_total",  # a replay after a crash: test_failover_and_scaling.py
    "agentfleet_llm_fallbacks_total",  # a call answered by a fallback setup: tests/agentplan/test_fallback.py
}
RATE_INTERVAL = "15s"  # Grafana's $__rate_interval for a 1 s scrape interval


def _get(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read()
    except OSError:
        return None
    return json.loads(body) if body.startswith(b"{") else {}


@pytest.fixture()
def prometheus(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """``start(target)`` runs Prometheus scraping ``target`` every second with the deploy alert rules;
    returns its base URL. Stopped (and waited for) at teardown."""
    if shutil.which("prometheus") is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("prometheus is not installed (Debian: apt-get install prometheus)")
    started: list[subprocess.Popen[bytes]] = []
    log = tmp_path / "prometheus.log"

    def start(target: str) -> str:
        config = tmp_path / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS_FILE)],
            "scrape_configs": [{"job_name": "agentfleet-worker", "static_configs": [{"targets": [target]}]}],
        }))
        port = free_port()
        with log.open("wb") as out:
            started.append(subprocess.Popen(
                ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{port}"], stdout=out, stderr=subprocess.STDOUT))
        base = f"http://127.0.0.1:{port}"
        assert wait_for(lambda: _get(f"{base}/-/ready") is not None, 60), log.read_text(errors="replace")[-3000:]
        return base

    yield start
    for process in started:
        process.terminate()
        process.wait(30)


def query(base: str, expression: str) -> list[Any]:
    answer = _get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expression}))
    assert answer is not None and answer.get("status") == "success", (expression, answer)
    return answer["data"]["result"]


def samples_of_up(base: str) -> int:
    result = query(base, 'count_over_time(up{job="agentfleet-worker"}[5m])')
    return int(result[0]["value"][1]) if result else 0


def test_prometheus_scraping_a_worker_answers_every_dashboard_and_alert_query(
        kafka, worker_factory, app_id, stub_llm, prometheus) -> None:
    input_topic = kafka.new_topic("prom-in", partitions=2)
    output_topic = kafka.new_topic("prom-out", partitions=2)
    # The counting agent with its endpoint under a limiter, so the limiter's series exist too.
    worker = worker_factory("tests.worker.integration.limits_agents:LimitedCountingAgent", input_topic, output_topic,
                            app_id,
                            env={"AGENTPLAN_RETRY_BACKOFF_S": "0.05"})
    worker.wait_ready(min_partitions=2)
    base = prometheus(f"127.0.0.1:{worker.metrics_port}")

    stub_llm.fail_next(2, "503")
    kafka.produce(input_topic, [(f"k{i}", json.dumps({"key": f"k{i}", "seq": 0})) for i in range(20)]
                  + [("bad", "not json")])
    assert len(read_all(kafka.bootstrap_servers, output_topic, 2, expected=20, timeout_s=60)) == 20
    assert wait_for(lambda: bool(query(base, "agentfleet_dlq_records_total")), 60), worker.log()
    # A few more scrapes after the last change, so rate() over the window sees the counters move.
    target = samples_of_up(base) + 3
    assert wait_for(lambda: samples_of_up(base) >= target, 30)

    series = _get(f"{base}/api/v1/series?" + urllib.parse.urlencode({"match[]": '{__name__=~"agentfleet_.+"}'}))
    exported = set().union(*(metric_families(s["__name__"]) for s in series["data"]))
    empty = []
    for where, expression in promql_expressions().items():
        result = query(base, expression.replace("$__rate_interval", RATE_INTERVAL))
        reads = metric_families(expression)
        missing = reads - EVENT_ONLY - exported
        assert not missing, f"{where} reads {sorted(missing)}, which Prometheus did not get from the worker"
        # An alert's expression is empty unless it fires: evaluating it is the check. A dashboard query
        # over exported series must show data.
        if not where.startswith("alert ") and not reads & EVENT_ONLY and not result:
            empty.append(where)
    assert not empty, f"dashboard queries without data: {empty}"
    # Nothing is wrong with this worker except one dead letter in 21 records, which the DLQ-rate alert
    # reports (pending: its `for` has not elapsed).
    alerts = _get(f"{base}/api/v1/alerts")["data"]["alerts"]
    assert {a["labels"]["alertname"] for a in alerts} <= {"AgentFleetDeadLetterRate"}, alerts
