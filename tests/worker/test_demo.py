"""`agentfleet demo` end to end: embedded broker, stub, two workers, the seed's 7 results."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kafka_support import selected_engine

REPO = Path(__file__).resolve().parents[2]


# The demo on Apache Kafka needs Java and Maven; the test session has them whenever it runs on Apache Kafka.
ENGINES = ["tansu", "kafka"] if selected_engine() == "apache-kafka" else ["tansu"]


@pytest.mark.integration
@pytest.mark.parametrize("engine", ENGINES)
def test_demo_prints_the_seven_seed_results_and_cleans_up(engine: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    out = subprocess.run([sys.executable, "-m", "worker.cli", "demo", "--engine", engine], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    results = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert sorted(r["id"] for r in results) == ["1", "2", "3", "4", "5", "7", "8"]
    assert {r["id"]: r["sentiment"] for r in results}["8"] == "negative"
    assert "7/7 results" in out.stdout
    pids = [int(line.split("pid ")[1].split(",")[0]) for line in out.stdout.splitlines() if ": pid " in line]
    assert len(pids) == 2
    broker_line = next(line for line in out.stdout.splitlines() if "(broker pid " in line)
    pids.append(int(broker_line.split("(broker pid ")[1].split(")")[0]))
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def test_kafka_engine_without_java_names_what_is_missing(tmp_path: Path) -> None:
    """No java and no mvn on PATH: one line that says what is missing and that Tansu needs neither."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    # An empty cache: the jars would have to be fetched, so Maven is needed too.
    env = {**os.environ, "PATH": str(bin_dir), "AGENTFLEET_CACHE": str(tmp_path / "cache")}
    for command in (["broker", "--engine", "kafka", "--port", "1"], ["demo", "--engine", "kafka"]):
        out = subprocess.run([sys.executable, "-m", "worker.cli", *command], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 1, out.stdout + out.stderr
        assert out.stderr.strip().splitlines() == [
            "error: --engine kafka needs Java 17 or newer (no `java` on PATH) and Maven (no `mvn` on PATH; "
            "it fetches the broker's jars from Maven Central once); --engine tansu needs neither"], out.stderr
        assert out.stdout == ""
