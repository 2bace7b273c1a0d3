"""The peers' bookkeeping, without their venvs: at-least-once offsets, the Flink Agents jar build, the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.peers import PEERS, flink_agents_jars
from bench.peers.exceptions import PeerRunError, PeerVenvError
from bench.peers.offset_tracker import OffsetTracker
from bench.scenarios import CONCURRENT_PEERS, INSTANT_MODEL_PEERS
from bench.scenarios import PEERS as SCENARIO_PEERS


def test_commit_stops_below_the_lowest_unfinished_record() -> None:
    tracker = OffsetTracker()
    for offset in range(10, 15):
        tracker.taken("in", 0, offset)
    tracker.taken("in", 1, 7)
    tracker.finished("in", 0, 12)  # out of order: 10 and 11 still open
    tracker.finished("in", 0, 13)
    assert tracker.to_commit() == {}
    tracker.finished("in", 0, 10)
    assert tracker.to_commit() == {("in", 0): 11}  # 11 is open: 12 and 13 must wait
    tracker.committed(tracker.to_commit())
    assert tracker.to_commit() == {}  # nothing moved since
    tracker.finished("in", 0, 11)
    tracker.finished("in", 1, 7)
    assert tracker.to_commit() == {("in", 0): 14, ("in", 1): 8}
    assert tracker.in_flight() == 1  # offset 14


def test_revoked_partitions_are_forgotten_and_late_results_ignored() -> None:
    tracker = OffsetTracker()
    tracker.taken("in", 0, 0)
    tracker.taken("in", 0, 1)
    tracker.finished("in", 0, 0)
    tracker.forget([("in", 0)])
    tracker.finished("in", 0, 1)  # a result for a partition this consumer no longer owns
    assert tracker.to_commit() == {} and tracker.in_flight() == 0


def test_source_build_drops_only_the_java_integrations() -> None:
    pom = """<dependencies>
        <dependency>
            <groupId>org.apache.flink</groupId>
            <artifactId>flink-agents-runtime</artifactId>
            <version>${project.version}</version>
        </dependency>
        <dependency>
            <groupId>org.apache.flink</groupId>
            <artifactId>flink-agents-integrations-chat-models-bedrock</artifactId>
            <version>${project.version}</version>
        </dependency>
        <dependency>
            <groupId>org.apache.flink</groupId>
            <artifactId>flink-agents-integrations-mcp</artifactId>
            <version>${project.version}</version>
        </dependency>
    </dependencies>"""
    stripped = flink_agents_jars.without_java_integrations(pom)
    assert "flink-agents-runtime" in stripped and "integrations" not in stripped
    assert stripped.count("<dependency>") == stripped.count("</dependency>") == 1
    with pytest.raises(PeerVenvError, match="dist/pom.xml"):
        flink_agents_jars.without_java_integrations(stripped)


def test_jars_are_looked_for_where_flink_agents_loads_them(tmp_path: Path) -> None:
    lib = tmp_path / "flink_agents" / "lib"
    assert not flink_agents_jars.jars_present(tmp_path)
    for jar in flink_agents_jars.JARS:
        (lib / jar.lib_dir).mkdir(parents=True)
        (lib / jar.lib_dir / jar.file_name).write_bytes(b"")
    assert flink_agents_jars.jars_present(tmp_path)
    assert {j.file_name for j in flink_agents_jars.JARS} == {
        "flink-agents-dist-common-0.3.1.jar", "flink-agents-dist-flink-1.20-0.3.1-thin.jar"}


def test_every_peer_is_run_and_reported() -> None:
    assert set(SCENARIO_PEERS) == set(PEERS) == set(report.PEER_NAMES)
    assert set(INSTANT_MODEL_PEERS) | set(CONCURRENT_PEERS) <= set(PEERS)
    assert all(script.is_file() for script, _ in PEERS.values())


def test_peer_table_has_cpu_per_record_for_ours_and_each_peer() -> None:
    median = {"records_per_s": 900, "worker_cpu_ms_per_record": 0.9,
              "peer_flink_agents_0_3_records_per_s": 90, "ours_vs_flink_agents_0_3": 10.0,
              "peer_flink_agents_0_3_cpu_ms_per_record": 12.5,
              "peer_asyncio_records_per_s": 450, "ours_vs_asyncio": 2.0, "peer_asyncio_cpu_ms_per_record": 1.5,
              "peer_flink_agents_error": "exited 1:\nboom"}
    rows = report.peer_rows({"S2": {"median": median}})
    assert len(rows) == 1 and rows[0]["ours_cpu_ms_per_record"] == 0.9
    assert rows[0]["peers"]["asyncio"]["cpu_ms_per_record"] == 1.5
    assert set(rows[0]["peers"]) == {"flink_agents", "flink_agents_0_3", "asyncio"}
    scenarios = {"S2": {"title": "S2", "runs": [median], "median": median}}
    results = {"command": "c", "mode": "quick", "started": "t0", "finished": "t1", "machine": {}, "repeats": 1,
               "scenarios": scenarios, "goals": report.goal_rows(scenarios), "peers": rows}
    markdown = report.markdown(results, [])
    row = "| S2 | 900, 0.9 ms | failed: exited 1: boom | 90 (10×), 12.5 ms | not run | not run | 450 (2×), 1.5 ms |"
    assert row in markdown


def test_a_failed_peer_is_reported_with_the_end_of_its_traceback() -> None:
    from bench.scenarios import _error_summary

    traceback = "\n".join(f'  File "peer.py", line {n}, in frame_{n}' for n in range(200))
    error = PeerRunError(f"peer flink_agents_0_3 exited 1 (result: None):\n{traceback}\nValueError: the cause")
    summary = _error_summary(error)
    assert summary.startswith("peer flink_agents_0_3 exited 1")
    assert summary.endswith("ValueError: the cause")  # the exception itself, which a head cut lost
    assert len(summary) < 700
    assert _error_summary(ValueError("one line")) == "one line"


def test_peers_get_their_own_extra_arguments_once_per_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 runs the concurrent peers again at 1,024 in flight: the asyncio loop's window widens with ours."""
    import bench.peers
    from bench.scenarios import RunOptions, _run_peers

    calls: list[tuple[str, list[str] | None]] = []

    def run_peer(name: str, **kwargs: Any) -> dict[str, Any]:
        calls.append((name, kwargs["extra_args"]))
        return {"records_per_s": 40.0}

    class Topics:
        bootstrap = "127.0.0.1:1"

        def topics(self, *names: str, partitions: int) -> None:
            pass

    monkeypatch.setattr(bench.peers, "run_peer", run_peer, raising=False)
    options = RunOptions(peers=True)
    figures = _run_peers(options, "S3@1024", Topics(), "in", 4, 100, "http://127.0.0.1:1/v1", 2000.0,  # type: ignore[arg-type]
                         peers=CONCURRENT_PEERS, extra_args={"asyncio": ["--max-inflight", "1024"]})
    assert calls == [("flink_agents_0_3", None), ("asyncio", ["--max-inflight", "1024"])]
    assert figures["ours_vs_asyncio"] == 50.0
    assert _run_peers(options, "S3@1024", Topics(), "in", 4, 100, "http://127.0.0.1:1/v1", 2000.0,  # type: ignore[arg-type]
                      peers=CONCURRENT_PEERS) == {}
    assert len(calls) == 2
