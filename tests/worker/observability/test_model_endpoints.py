"""The model endpoints' health in the worker: ``agentfleet_llm_endpoint_up`` and ``/readyz``'s check
(over real HTTP on 127.0.0.1), fed from agentplan's Kafka-free registry."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from agentplan.endpoints import EndpointRegistry
from worker.observability.health import ObservabilityServer, model_endpoints_readiness
from worker.observability.metrics import WorkerMetrics

SECRET = "sk-never-shown"


def _readyz(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2.0) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read())


def test_gauge_follows_each_endpoint_at_scrape_time() -> None:
    endpoints = EndpointRegistry(failures_to_down=1)
    metrics = WorkerMetrics(endpoints=endpoints)
    sample = metrics.registry.get_sample_value
    assert sample("agentfleet_llm_endpoint_up", {"endpoint": "http://a:1/v1"}) is None  # none called yet
    a = endpoints.endpoint("http://a:1/v1", "OPENAI_BASE_URL")
    endpoints.endpoint("https://user:pw@b/v1?key=" + SECRET, "the api_base_url argument")
    assert sample("agentfleet_llm_endpoint_up", {"endpoint": "http://a:1/v1"}) == 1.0
    assert sample("agentfleet_llm_endpoint_up", {"endpoint": "https://b/v1"}) == 1.0
    a.failed("cannot reach the model server")
    assert sample("agentfleet_llm_endpoint_up", {"endpoint": "http://a:1/v1"}) == 0.0
    a.succeeded()
    assert sample("agentfleet_llm_endpoint_up", {"endpoint": "http://a:1/v1"}) == 1.0


def test_readyz_fails_while_a_model_endpoint_fails_and_healthz_stays_green() -> None:
    endpoints = EndpointRegistry(failures_to_down=1)
    assert model_endpoints_readiness(endpoints) == (True, {"model_endpoints": []})
    endpoint = endpoints.endpoint("http://127.0.0.1:9/v1", "OPENAI_BASE_URL")
    metrics = WorkerMetrics(endpoints=endpoints)
    with ObservabilityServer(metrics.registry, host="127.0.0.1", port=0,
                             readiness=lambda: model_endpoints_readiness(endpoints)) as server:
        status, body = _readyz(server.port)
        assert status == 200 and body["model_endpoints"][0]["up"] is True

        endpoint.failed("cannot reach the model server: ConnectionRefusedError: [Errno 111]")
        status, body = _readyz(server.port)
        assert status == 503 and body["ready"] is False
        (detail,) = body["model_endpoints"]
        assert detail["url"] == "http://127.0.0.1:9/v1" and detail["source"] == "OPENAI_BASE_URL"
        assert detail["up"] is False and detail["failures"] == 1 and "ConnectionRefusedError" in detail["last_error"]
        assert detail["since"].endswith("+00:00")
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=2.0) as resp:
            assert resp.status == 200

        endpoint.succeeded()
        status, body = _readyz(server.port)
        assert status == 200 and body["model_endpoints"][0]["up"] is True
