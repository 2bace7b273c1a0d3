"""Tests for worker.observability.metrics."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from worker.observability.metrics import METRIC_NAMES, WorkerMetrics, exported_metric_names


def _touch_all_labelled(m: WorkerMetrics) -> None:
    m.records_in_total.labels(topic="in", partition="0").inc()
    m.records_out_total.labels(topic="out").inc()
    m.records_skipped_total.labels(reason="already_finished").inc()
    m.dlq_records_total.labels(reason="poison").inc()
    m.consumer_lag.labels(topic="in", partition="0").set(5)
    m.action_duration_seconds.labels(action="a").observe(0.1)
    m.action_errors_total.labels(action="a", kind="ValueError").inc()
    m.llm_request_duration_seconds.labels(model="gpt").observe(1.0)
    m.llm_requests_total.labels(model="gpt", outcome="ok").inc()
    m.llm_errors_total.labels(model="gpt", kind="Timeout").inc()
    m.llm_tokens_total.labels(model="gpt", type="prompt").inc(3)
    m.rebalances_total.labels(event="assigned").inc()
    m.transient_retries_total.labels(kind="timeout").inc()
    m.set_worker_info("app", "inst-1", "1.2.3")


def test_metric_names_match_exposition() -> None:
    m = WorkerMetrics()
    _touch_all_labelled(m)
    assert len(METRIC_NAMES) == len(set(METRIC_NAMES))
    assert all(n.startswith("agentfleet_") for n in METRIC_NAMES)
    assert set(METRIC_NAMES) == exported_metric_names(m.registry)


def test_attributes_named_after_metrics() -> None:
    m = WorkerMetrics()
    for name in METRIC_NAMES:
        assert hasattr(m, name[len("agentfleet_"):]), name


def test_uses_private_registry_and_instances_coexist() -> None:
    a = WorkerMetrics()
    b = WorkerMetrics()
    shared = CollectorRegistry()
    c = WorkerMetrics(shared)
    assert c.registry is shared
    assert a.registry is not b.registry and a.registry is not REGISTRY
    a.run_finished(1.0)
    assert a.registry.get_sample_value("agentfleet_run_duration_seconds_count") == 1.0
    assert b.registry.get_sample_value("agentfleet_run_duration_seconds_count") == 0.0
    assert REGISTRY.get_sample_value("agentfleet_run_duration_seconds_count") is None


def test_action_finished() -> None:
    m = WorkerMetrics()
    r = m.registry
    m.action_finished("lookup", 0.2, None)
    m.action_finished("lookup", 0.3, KeyError("x"))
    assert r.get_sample_value("agentfleet_action_duration_seconds_count", {"action": "lookup"}) == 2.0
    assert abs(r.get_sample_value("agentfleet_action_duration_seconds_sum", {"action": "lookup"}) - 0.5) < 1e-9
    assert r.get_sample_value("agentfleet_action_errors_total", {"action": "lookup", "kind": "KeyError"}) == 1.0
    assert r.get_sample_value(
        "agentfleet_action_duration_seconds_bucket", {"action": "lookup", "le": "0.25"}
    ) == 1.0


def test_run_finished() -> None:
    m = WorkerMetrics()
    m.run_finished(45.0)
    r = m.registry
    assert r.get_sample_value("agentfleet_run_duration_seconds_count") == 1.0
    assert r.get_sample_value("agentfleet_run_duration_seconds_bucket", {"le": "30.0"}) == 0.0
    assert r.get_sample_value("agentfleet_run_duration_seconds_bucket", {"le": "60.0"}) == 1.0
    assert r.get_sample_value("agentfleet_run_duration_seconds_bucket", {"le": "120.0"}) == 1.0
    assert r.get_sample_value("agentfleet_run_duration_seconds_bucket", {"le": "0.001"}) == 0.0


def test_llm_request_ok_and_error() -> None:
    m = WorkerMetrics()
    r = m.registry
    m.llm_request("gpt-x", 1.5, None, prompt_tokens=100, completion_tokens=20)
    m.llm_request("gpt-x", 0.5, TimeoutError("t"), prompt_tokens=7)
    assert r.get_sample_value("agentfleet_llm_request_duration_seconds_count", {"model": "gpt-x"}) == 2.0
    assert r.get_sample_value("agentfleet_llm_requests_total", {"model": "gpt-x", "outcome": "ok"}) == 1.0
    assert r.get_sample_value("agentfleet_llm_requests_total", {"model": "gpt-x", "outcome": "error"}) == 1.0
    assert r.get_sample_value("agentfleet_llm_errors_total", {"model": "gpt-x", "kind": "TimeoutError"}) == 1.0
    assert r.get_sample_value("agentfleet_llm_tokens_total", {"model": "gpt-x", "type": "prompt"}) == 107.0
    assert r.get_sample_value("agentfleet_llm_tokens_total", {"model": "gpt-x", "type": "completion"}) == 20.0


def test_transient_retry() -> None:
    m = WorkerMetrics()
    m.transient_retry("broker_unavailable")
    m.transient_retry("broker_unavailable")
    assert m.registry.get_sample_value(
        "agentfleet_transient_retries_total", {"kind": "broker_unavailable"}
    ) == 2.0


def test_sink_methods_never_raise() -> None:
    m = WorkerMetrics()
    m.action_finished("a", float("nan"), None)
    m.action_finished("a", -1.0, None)
    m.run_finished("not a number")  # type: ignore[arg-type]
    m.llm_request("m", 0.1, None, prompt_tokens=-5, completion_tokens="x")  # type: ignore[arg-type]
    m.transient_retry(None)  # type: ignore[arg-type]
    assert m.registry.get_sample_value("agentfleet_llm_tokens_total", {"model": "m", "type": "prompt"}) is None


def test_worker_info_single_series() -> None:
    m = WorkerMetrics(app_id="app", instance_id="i-1", version="0.9")
    r = m.registry
    assert r.get_sample_value(
        "agentfleet_worker_info", {"app_id": "app", "instance_id": "i-1", "version": "0.9"}
    ) == 1.0
    m.set_worker_info("app", "i-2", "0.9")
    assert r.get_sample_value(
        "agentfleet_worker_info", {"app_id": "app", "instance_id": "i-1", "version": "0.9"}
    ) is None
    text = generate_latest(r).decode()
    assert text.count("agentfleet_worker_info{") == 1
