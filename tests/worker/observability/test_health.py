"""Tests for worker.observability.health (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest

from worker.observability.health import ObservabilityServer
from worker.observability.metrics import WorkerMetrics

TIMEOUT = 2.0


def _get(port: int, path: str) -> tuple[int, str, str]:
    """GET a path; return (status, content-type, body) also for error statuses."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers.get("Content-Type", ""), err.read().decode()


def test_metrics_endpoint() -> None:
    m = WorkerMetrics()
    m.records_in_total.labels(topic="in", partition="3").inc()
    with ObservabilityServer(m.registry, host="127.0.0.1", port=0) as srv:
        assert srv.port != 0
        status, ctype, body = _get(srv.port, "/metrics")
    assert status == 200
    assert ctype.startswith("text/plain")
    assert 'agentfleet_records_in_total{partition="3",topic="in"} 1.0' in body
    assert "agentfleet_run_duration_seconds_bucket" in body


def test_healthz_flips() -> None:
    alive = {"v": True}
    m = WorkerMetrics()
    with ObservabilityServer(m.registry, host="127.0.0.1", port=0, liveness=lambda: alive["v"]) as srv:
        assert _get(srv.port, "/healthz")[::2] == (200, "ok")
        alive["v"] = False
        assert _get(srv.port, "/healthz")[0] == 503


def test_readyz_flips_with_detail() -> None:
    state: dict = {"ready": False, "detail": {"restoring_partitions": 3}}
    m = WorkerMetrics()
    srv = ObservabilityServer(
        m.registry, host="127.0.0.1", port=0,
        readiness=lambda: (state["ready"], state["detail"]),
    ).start()
    try:
        status, ctype, body = _get(srv.port, "/readyz")
        assert status == 503
        assert ctype == "application/json"
        assert json.loads(body) == {"ready": False, "restoring_partitions": 3}
        state["ready"], state["detail"] = True, {"assigned_partitions": 2}
        status, _, body = _get(srv.port, "/readyz")
        assert status == 200
        assert json.loads(body) == {"ready": True, "assigned_partitions": 2}
    finally:
        srv.stop()


def test_failing_probes_report_unhealthy_without_message() -> None:
    def boom() -> bool:
        raise RuntimeError("secret payload text")

    m = WorkerMetrics()
    with ObservabilityServer(m.registry, host="127.0.0.1", port=0, liveness=boom, readiness=boom) as srv:  # type: ignore[arg-type]
        assert _get(srv.port, "/healthz")[0] == 503
        status, _, body = _get(srv.port, "/readyz")
    assert status == 503
    assert "secret" not in body
    assert json.loads(body) == {"ready": False, "error": "RuntimeError"}


def test_unknown_path_404() -> None:
    m = WorkerMetrics()
    with ObservabilityServer(m.registry, host="127.0.0.1", port=0) as srv:
        assert _get(srv.port, "/nope")[0] == 404
        assert _get(srv.port, "/metrics/extra")[0] == 404
        assert _get(srv.port, "/healthz?x=1")[0] == 200


def test_stop_frees_port_and_is_idempotent() -> None:
    m = WorkerMetrics()
    srv = ObservabilityServer(m.registry, host="127.0.0.1", port=0).start()
    port = srv.port
    assert srv.start() is srv  # idempotent
    assert _get(port, "/healthz")[0] == 200
    srv.stop()
    assert not srv.running
    srv.stop()  # idempotent
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
    # The same port can be bound again by a new server.
    with ObservabilityServer(m.registry, host="127.0.0.1", port=port) as again:
        assert again.port == port
        assert _get(port, "/healthz")[0] == 200


def test_no_request_logging_to_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    m = WorkerMetrics()
    with ObservabilityServer(m.registry, host="127.0.0.1", port=0) as srv:
        _get(srv.port, "/healthz")
        _get(srv.port, "/nope")
    out, err = capfd.readouterr()
    assert "GET /healthz" not in err and "GET /nope" not in err
