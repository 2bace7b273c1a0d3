"""Kubernetes manifests: core kinds validated against the Kubernetes OpenAPI schemas offline
(kubernetes-validate bundles them); the CRDs (KEDA, Prometheus Operator, Kustomize) against the
fields of their APIs that these manifests use, written here; plus the wiring between them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from tests.deploy.deploy_files import compose, k8s_documents
from worker.config import ENV_PREFIX, WorkerSettings

KUBERNETES_VERSION = "1.31.0"


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


_STR = {"type": "string"}
_METADATA = _object({"name": _STR, "namespace": _STR, "labels": {"type": "object"}}, ("name",))
_SELECTOR = _object({"matchLabels": {"type": "object", "additionalProperties": _STR}}, ("matchLabels",))
CRD_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("keda.sh/v1alpha1", "ScaledObject"): _object({
        "apiVersion": _STR, "kind": _STR, "metadata": _METADATA,
        "spec": _object({
            "scaleTargetRef": _object({"apiVersion": _STR, "kind": _STR, "name": _STR}, ("name",)),
            "minReplicaCount": {"type": "integer", "minimum": 0},
            "maxReplicaCount": {"type": "integer", "minimum": 1},
            "cooldownPeriod": {"type": "integer"},
            "pollingInterval": {"type": "integer"},
            "triggers": {"type": "array", "minItems": 1, "items": _object({
                "type": {"enum": ["kafka", "apache-kafka"]},
                "metadata": {"type": "object", "additionalProperties": _STR,
                             "required": ["bootstrapServers", "consumerGroup", "topic", "lagThreshold"]},
            }, ("type", "metadata"))},
        }, ("scaleTargetRef", "triggers")),
    }, ("apiVersion", "kind", "metadata", "spec")),
    ("monitoring.coreos.com/v1", "PodMonitor"): _object({
        "apiVersion": _STR, "kind": _STR, "metadata": _METADATA,
        "spec": _object({
            "selector": _SELECTOR,
            "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": _object(
                {"port": _STR, "path": _STR, "interval": {"type": "string", "pattern": r"^\d+[smh]$"}}, ("port",))},
        }, ("selector", "podMetricsEndpoints")),
    }, ("apiVersion", "kind", "metadata", "spec")),
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"): _object({
        "apiVersion": _STR, "kind": _STR,
        "resources": {"type": "array", "items": _STR},
        "labels": {"type": "array"},
    }, ("resources",)),
}


def documents() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for _, doc in k8s_documents()}


@pytest.mark.parametrize("path,doc", k8s_documents(), ids=lambda v: v.name if isinstance(v, Path) else "")
def test_manifest_is_valid(path: Path, doc: dict[str, Any]):
    crd = CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if crd is not None:
        jsonschema.validate(doc, crd)
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_validation_rejects_a_broken_manifest():
    broken = documents()["StatefulSet"]
    broken = {**broken, "spec": {**broken["spec"], "replicas": "three"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest():
    listed = set(documents()["Kustomization"]["resources"])
    files = {path.name for path, doc in k8s_documents() if doc["kind"] != "Kustomization"}
    assert listed == files


def pod_spec() -> dict[str, Any]:
    return documents()["StatefulSet"]["spec"]["template"]["spec"]


def test_instance_id_is_the_pod_name_and_the_llm_key_a_secret_reference():
    env = {e["name"]: e for e in pod_spec()["containers"][0]["env"]}
    assert env["AGENTFLEET_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert "secretKeyRef" in env["OPENAI_API_KEY"]["valueFrom"]
    assert "value" not in env["OPENAI_API_KEY"]


def test_config_map_holds_only_settings_the_worker_knows():
    data = documents()["ConfigMap"]["data"]
    unknown = [k for k in data
               if k.startswith(ENV_PREFIX) and k[len(ENV_PREFIX):].lower() not in WorkerSettings.model_fields]
    assert not unknown
    assert not any("KEY" in k or "PASSWORD" in k for k in data), "secrets belong in a Secret"
    WorkerSettings.load(env={**data, "AGENTFLEET_INSTANCE_ID": "agentfleet-worker-0"})


def test_pods_run_non_root_with_requests_and_probes():
    spec = pod_spec()
    assert spec["securityContext"]["runAsNonRoot"] is True
    container = spec["containers"][0]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    grace = float(WorkerSettings.model_fields["shutdown_grace_s"].default)
    assert spec["terminationGracePeriodSeconds"] > grace


def test_scaler_targets_the_worker_group_and_stops_at_the_partition_count():
    scaled = documents()["ScaledObject"]
    config = documents()["ConfigMap"]["data"]
    trigger = scaled["spec"]["triggers"][0]["metadata"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == documents()["StatefulSet"]["metadata"]["name"]
    assert trigger["consumerGroup"] == config["AGENTFLEET_APP_ID"]
    assert trigger["topic"] == config["AGENTFLEET_INPUT_TOPIC"]
    # More workers than input partitions sit idle. The compose setup creates the same 12 partitions.
    partitions = int(compose()["services"]["init-topics"]["command"][-1])
    assert scaled["spec"]["maxReplicaCount"] == partitions


def test_monitoring_and_disruption_budget_select_the_worker_pods():
    labels = documents()["StatefulSet"]["spec"]["template"]["metadata"]["labels"]
    for kind in ("PodMonitor", "PodDisruptionBudget", "Service"):
        spec = documents()[kind]["spec"]
        selector = spec["selector"].get("matchLabels", spec["selector"])
        assert selector.items() <= labels.items(), kind
    ports = {p["name"] for p in pod_spec()["containers"][0]["ports"]}
    assert documents()["PodMonitor"]["spec"]["podMetricsEndpoints"][0]["port"] in ports
