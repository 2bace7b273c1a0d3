"""Misconfiguration stops a worker with one line naming the setting, before any side effect."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from tests.kafka_support import KafkaCluster
from tests.worker.integration.harness import REPO

pytestmark = pytest.mark.integration


def test_a_metrics_port_in_use_fails_before_topics_or_state_are_created(kafka: KafkaCluster, tmp_path: Path) -> None:
    """Issue seen: a second worker on the default port crashed with a 90-line traceback after it had created
    its changelog topic and state folder."""
    input_topic, output_topic = kafka.new_topic("port-in"), kafka.new_topic("port-out")
    app_id = f"port-{uuid.uuid4().hex[:8]}"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "worker.cli", "worker", "--agent", "tests.worker.integration.agents:PoisonAgent",
             "--input-topic", input_topic, "--output-topic", output_topic, "--app-id", app_id,
             "--bootstrap-servers", kafka.bootstrap_servers, "--metrics-host", "127.0.0.1",
             "--metrics-port", str(port), "--state-dir", str(tmp_path / "state")],
            cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 2, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: metrics-port: cannot listen on 127.0.0.1:{port}: "), last
    assert "--metrics-port" in last, last
    assert "Traceback" not in out.stderr
    topics = AdminClient({"bootstrap.servers": kafka.bootstrap_servers}).list_topics(timeout=10).topics
    assert not [t for t in topics if t.startswith(app_id)], sorted(topics)
    assert not (tmp_path / "state").exists()
