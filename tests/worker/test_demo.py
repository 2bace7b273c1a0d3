"""`agentfleet demo` end to end: embedded broker, stub, two workers, the seed's 7 results."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_demo_prints_the_seven_seed_results_and_cleans_up():
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    out = subprocess.run([sys.executable, "-m", "worker.cli", "demo"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    results = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert sorted(r["id"] for r in results) == ["1", "2", "3", "4", "5", "7", "8"]
    assert {r["id"]: r["sentiment"] for r in results}["8"] == "negative"
    assert "7/7 results" in out.stdout
    pids = [int(line.split("pid ")[1].split(",")[0]) for line in out.stdout.splitlines() if ": pid " in line]
    assert len(pids) == 2
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
