"""docker-compose.yml and Dockerfile, checked without a Docker engine.

What is checked is what `docker compose config` and a first `up` would trip over: unknown
services, missing files, unpinned images, commands the image's CLI rejects, settings the worker
does not know, and the wiring between Kafka, the workers, Prometheus and Grafana.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_files import (
    COMPOSE_FILE,
    DOCKERFILE,
    PROMETHEUS_FILE,
    REPO,
    compose,
    compose_variables,
    interpolate,
    parse_cli,
)
from worker.config import ENV_PREFIX, KAFKA_ENV_PREFIX, REVERSE_DNS, WorkerSettings

TOP_LEVEL_KEYS = {"name", "services", "volumes", "networks", "configs", "secrets"}
OUR_IMAGE = "agentfleet"


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def ours() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in services().items() if svc["image"].split(":")[0] == OUR_IMAGE}


def environment(service: str) -> dict[str, str]:
    return {k: interpolate(str(v)) for k, v in services()[service].get("environment", {}).items()}


def test_top_level_keys_are_compose_keys():
    assert set(compose()) - TOP_LEVEL_KEYS <= {k for k in compose() if k.startswith("x-")}


def test_every_image_is_pinned():
    for name, svc in services().items():
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: image {image!r} is not pinned to a version"


def test_our_services_build_from_this_repo():
    for name, svc in ours().items():
        context = REPO / svc["build"]
        assert (context / "Dockerfile").is_file(), name


def test_bind_mounts_exist_and_named_volumes_are_declared():
    declared = set(compose().get("volumes") or {})
    for name, svc in services().items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (COMPOSE_FILE.parent / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source!r} is not declared"


def test_dependencies_name_existing_services():
    for name, svc in services().items():
        depends = svc.get("depends_on", {})
        for dependency in depends:
            assert dependency in services(), f"{name} depends on unknown {dependency!r}"
            if isinstance(depends, dict):
                assert depends[dependency]["condition"] in {
                    "service_started", "service_healthy", "service_completed_successfully"}
                if depends[dependency]["condition"] == "service_healthy":
                    assert "healthcheck" in services()[dependency], f"{dependency} has no healthcheck"


def test_every_variable_has_a_default_so_up_works_without_env_file():
    missing = [name for name, default in compose_variables().items() if default is None]
    assert not missing, f"variables without a default: {missing}"


def test_published_ports_bind_loopback_only():
    for name, svc in services().items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


@pytest.mark.parametrize("service", ["init-topics", "llm-stub", "worker", "cli"])
def test_our_commands_parse_with_the_images_cli(service: str, monkeypatch: pytest.MonkeyPatch):
    for key, value in environment(service).items():
        monkeypatch.setenv(key, value)
    args = [interpolate(str(a)) for a in services()[service]["command"]]
    if args == ["--help"]:
        return  # the tools container prints help unless given a command
    ctx = parse_cli(args)
    if service == "init-topics":
        assert ctx.params["partitions"] == 12
        assert set(ctx.params["names"]) == {environment("worker")["AGENTFLEET_INPUT_TOPIC"],
                                            environment("worker")["AGENTFLEET_OUTPUT_TOPIC"]}
        assert ctx.params["bootstrap_servers"] == "kafka:9092"
    if service == "llm-stub":
        assert ctx.params["host"] == "0.0.0.0"
        assert f":{ctx.params['port']}/" in environment("worker")["OPENAI_BASE_URL"]


def test_worker_settings_are_ones_the_worker_knows_and_load():
    env = environment("worker")
    unknown = [k for k in env if k.startswith(ENV_PREFIX) and not k.startswith(KAFKA_ENV_PREFIX)
               and k[len(ENV_PREFIX):].lower() not in WorkerSettings.model_fields | {"log_level": None}]
    assert not unknown, f"settings the worker does not know: {unknown}"
    env["AGENTFLEET_INSTANCE_ID"] = "worker-1"  # reverse-dns resolves only inside the compose network
    settings = WorkerSettings.load(env=env)
    assert settings.bootstrap_servers == "kafka:9092"
    assert settings.metrics_port == 9400


def test_worker_agent_and_resources_import_from_the_image_layout():
    env = environment("worker")
    targets = [env["AGENTFLEET_AGENT"], env["AGENTFLEET_INPUT_MODEL"],
               *(item.partition("=")[2] for item in env["AGENTFLEET_RESOURCES"].split(","))]
    for target in targets:
        module, _, attr = target.partition(":")
        assert (REPO / module.split(".")[0]).is_dir(), f"{module} is not copied into the image"
        assert hasattr(importlib.import_module(module), attr), target


def test_workers_have_three_replicas_with_distinct_stable_ids():
    worker = services()["worker"]
    assert worker["deploy"]["replicas"] == 3
    assert "container_name" not in worker and "hostname" not in worker  # either would clash across replicas
    assert environment("worker")["AGENTFLEET_INSTANCE_ID"] == REVERSE_DNS


def test_kafka_is_single_node_kraft_with_transaction_log_fit_for_one_broker():
    kafka = services()["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = {k: str(v) for k, v in kafka["environment"].items()}
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    # Transactions need the transaction state log; with one broker its replication must be 1.
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    internal = next(li for li in env["KAFKA_ADVERTISED_LISTENERS"].split(",") if li.startswith("INTERNAL://"))
    assert internal.removeprefix("INTERNAL://") == environment("worker")["AGENTFLEET_BOOTSTRAP_SERVERS"]


def test_prometheus_discovers_every_worker_replica_by_dns():
    prometheus = yaml.safe_load(PROMETHEUS_FILE.read_text())
    job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "agentfleet-worker")
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["worker"] and sd["type"] == "A"
    assert sd["port"] == int(environment("worker")["AGENTFLEET_METRICS_PORT"])
    mounts = dict(v.split(":")[:2] for v in services()["prometheus"]["volumes"])
    for rule_file in prometheus["rule_files"]:
        assert rule_file in mounts.values(), f"{rule_file} is not mounted into the prometheus container"


def test_grafana_provisioning_points_at_mounted_dashboards_and_datasource():
    mounts = {target: REPO / source for source, target, *_ in (v.split(":") for v in services()["grafana"]["volumes"])}
    provisioning = mounts["/etc/grafana/provisioning"]
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((provisioning / "dashboards" / "agentfleet.yml").read_text())["providers"][0]
    dashboards = mounts[provider["options"]["path"]]
    assert list(dashboards.glob("*.json"))
    home = Path(services()["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert (dashboards / home.relative_to(provider["options"]["path"])).is_file()
    for dashboard in dashboards.glob("*.json"):
        assert f'"uid": "{datasource["uid"]}"' in dashboard.read_text()


def test_dockerfile_runs_as_non_root_on_a_pinned_python():
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:\d+\.\d+\.\d+-slim", text, re.M)
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in {"root", "0"}
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for path in source.split():
            assert (REPO / path).exists(), f"Dockerfile copies missing {path}"
    ignored = (REPO / ".dockerignore").read_text().split()
    for needed in ("agentplan", "worker", "examples", "pyproject.toml", "README.md"):
        assert needed not in ignored, f".dockerignore drops {needed}, which the image needs"
