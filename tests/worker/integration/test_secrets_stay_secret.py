"""Issue 6, security: API keys and Kafka passwords never leave the process; payloads stay out of metrics.

A worker runs with recognisable canaries: the OpenAI API key (in the environment and in the
compiled plan) and librdkafka passwords that a PLAINTEXT connection never uses. Then every place an
operator or a downstream consumer can read is searched for them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from agentplan.testing.llm_stub import StubLLMServer
from tests.worker.integration.harness import REPO, header, read_all

pytestmark = pytest.mark.integration

AGENT = "tests.worker.integration.secret_agents:CanaryAgent"
RESOURCE = "keyed_llm=tests.worker.integration.secret_agents:keyed_connection"
PARTITIONS = 2


def searchable(messages) -> str:
    """Keys, values and headers of Kafka records as one text."""
    parts = []
    for m in messages:
        parts += [repr(m.key()), repr(m.value())]
        parts += [f"{k}={v!r}" for k, v in m.headers() or []]
    return "\n".join(parts)


def test_api_keys_and_kafka_passwords_appear_nowhere(kafka, worker_factory, app_id, stub_llm: StubLLMServer):
    tag = uuid.uuid4().hex[:10]
    api_key = f"sk-canary-{tag}"
    passwords = [f"sasl-pw-canary-{tag}", f"ssl-pw-canary-{tag}"]
    secrets = [api_key, *passwords]
    payload = f"payload-canary-{tag}"

    input_topic = kafka.new_topic("secrets-in", partitions=PARTITIONS)
    output_topic = kafka.new_topic("secrets-out", partitions=PARTITIONS)
    worker = worker_factory(AGENT, input_topic, output_topic, app_id, instance_id="s",
                            env={"OPENAI_API_KEY": api_key, "AGENTFLEET_KAFKA_SSL_KEY_PASSWORD": passwords[1]},
                            extra_args=["-r", RESOURCE, "-X", "sasl.username=svc",
                                        "-X", f"sasl.password={passwords[0]}"])
    worker.wait_ready(min_partitions=PARTITIONS)
    kafka.produce(input_topic, [
        ("ok", json.dumps({"text": f"{payload} hello"})),
        ("fails", json.dumps({"fail": True, "text": payload + "x" * 5000})),
        ("garbage", f"{{not json {payload}"),
    ])
    outputs = read_all(kafka.bootstrap_servers, output_topic, PARTITIONS, expected=1)
    dead = read_all(kafka.bootstrap_servers, f"{input_topic}-dlq", PARTITIONS, expected=2)
    changelog = read_all(kafka.bootstrap_servers, f"{app_id}-state-changelog", PARTITIONS, expected=1)
    assert len(outputs) == 1 and len(dead) == 2 and changelog, worker.log()
    assert stub_llm.request_count >= 1  # the key was in use, not just configured

    endpoints = {path: worker.http(path) for path in ("/metrics", "/healthz", "/readyz")}
    assert all(status == 200 for status, _body in endpoints.values()), endpoints
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENAI_API_KEY": api_key}
    plan = subprocess.run([sys.executable, "-m", "worker.cli", "plan", "show", AGENT, "-r", RESOURCE], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=60)
    assert plan.returncode == 0, plan.stderr
    assert worker.terminate() == 0, worker.log()
    log = worker.log_path.read_text(errors="replace")

    places = {"worker log": log, "plan show": plan.stdout + plan.stderr, "outputs": searchable(outputs),
              "dead letters": searchable(dead), "changelog": searchable(changelog),
              **{path: body for path, (_status, body) in endpoints.items()}}
    for place, text in places.items():
        for secret in secrets:
            assert secret not in text, f"{secret} leaked into {place}"
    for path, (_status, body) in endpoints.items():
        assert payload not in body, f"payload data in {path}"

    # The canaries were really there to leak: redacted where shown, payload kept where it belongs.
    assert "'sasl.password': '***'" in log and "'ssl.key.password': '***'" in log
    connection = next(r for r in json.loads(plan.stdout)["resources"] if r["name"] == "keyed_llm")
    assert connection["descriptor"]["arguments"]["api_key"] == "***"
    assert payload in searchable(dead)  # dead letters keep the original record

    # Dead-letter headers carry at most 1 KiB of error text, however long the payload in it.
    failed = next(m for m in dead if header(m, "agentfleet.dlq.reason") == "run-failed")
    error = dict(failed.headers())["agentfleet.dlq.error"]
    assert b"cannot handle payload-canary" in error and error.endswith(b"...") and len(error) <= 1024
    assert all(len(value or b"") <= 1024 for m in dead for _name, value in m.headers())
