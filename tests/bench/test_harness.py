"""The benchmark harness's bookkeeping (no scenarios run here: figures come from ``python -m bench run``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import report
from bench.agents import InstantChatModelConnection
from bench.profiling import summarise
from bench.scenarios import GOALS, Goal, machine_bound_per_s
from bench.stubload import _wrk_ms


def test_medians_over_repeats_keep_non_numeric_figures() -> None:
    runs = [{"records_per_s": 10, "tag": "a", "profile": {"x": 1}},
            {"records_per_s": 30, "tag": "b"},
            {"records_per_s": 20, "tag": "c"}]
    merged = report.median_figures(runs)
    assert merged["records_per_s"] == 20
    assert merged["tag"] == "c"  # the last run's value
    assert merged["profile"] == {"x": 1}  # only the profiled run has it


def test_goal_ratio_direction() -> None:
    at_least = Goal("S1", "records_per_s", 10_000, "min", "")
    at_most = Goal("S7", "e2e_p50_ms", 20, "max", "")
    assert at_least.ratio(5_000) == 0.5 and at_least.ratio(20_000) == 2.0
    assert at_most.ratio(40) == 0.5 and at_most.ratio(10) == 2.0
    assert Goal("S6", "lost", 0, "max", "").ratio(0) == float("inf")  # 0 lost meets "<= 0"
    assert {g.scenario for g in GOALS} == {"S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8"}


def test_report_files(tmp_path: Path) -> None:
    results = {"command": "python -m bench run --quick", "mode": "quick", "started": "t0", "finished": "t1",
               "machine": report.machine(), "repeats": 1,
               "scenarios": {"S1": {"title": "S1", "runs": [{"records_per_s": 12_000}],
                                    "median": {"records_per_s": 12_000}},
                             "S6": {"title": "S6", "runs": [{"resume_s": 20.0, "lost": 3}],
                                    "median": {"resume_s": 20.0, "lost": 3}},
                             "S2": {"title": "S2", "error": "BenchError: boom", "runs": []}}}
    paths = report.write(results, tmp_path)
    data = json.loads((tmp_path / "latest.json").read_text())
    rows = {(r["scenario"], r["figure"]): r for r in data["goals"]}
    assert rows[("S1", "records_per_s")]["pass"] and rows[("S1", "records_per_s")]["ratio"] == 1.2
    assert not rows[("S6", "resume_s")]["pass"] and not rows[("S6", "lost")]["pass"]
    assert ("S2", "records_per_s") not in rows  # failed scenario: no figure, the error is in the markdown
    markdown = (tmp_path / "latest.md").read_text()
    assert "| S1 | records_per_s | 12,000 | ≥ 10,000 | 1.2 | yes |" in markdown
    assert "Failed: `BenchError: boom`" in markdown
    assert data["machine"]["cores"] and data["machine"]["python"]
    assert all(p.exists() for p in paths)


def test_profile_summary_shares(tmp_path: Path) -> None:
    collapsed = tmp_path / "p.collapsed"
    collapsed.write_text(
        "main (worker/cli.py:1);chat (agentplan/integrations/openai.py:10);send (httpx2/_models.py:5) 6\n"
        "main (worker/cli.py:1);_commit (worker/runtime.py:300) 3\n"
        "select (selectors.py:415) 1\n")
    summary = summarise(collapsed)
    assert summary["samples"] == [("total", 10.0)]
    assert summary["self"][0] == ("send (httpx2/_models.py)", 60.0)
    assert ("main (worker/cli.py)", 90.0) in summary["inclusive"]
    assert dict(summary["packages"]) == {"httpx2 (HTTP client)": 60.0, "worker": 30.0, "selectors": 10.0}


@pytest.mark.parametrize("text, expected", [("    50%  812.00us", 0.81), ("    99%   21.18ms", 21.18),
                                            ("    99%    1.20s", 1200.0)])
def test_wrk_latency_units(text: str, expected: float) -> None:
    assert _wrk_ms(f"Latency Distribution\n{text}\n", text.split()[0]) == expected


def test_instant_model_answers_like_the_stub() -> None:
    import asyncio

    from agentplan.chat_message import ChatMessage, MessageRole

    answer = asyncio.run(InstantChatModelConnection().chat(
        [ChatMessage(role=MessageRole.SYSTEM, content="Analyze the sentiment."),
         ChatMessage(role=MessageRole.USER, content="Input text: I love it")], model="m"))
    assert json.loads(answer.message.content)["sentiment"] == "positive"


def test_peers_are_tabled_beside_ours_per_scenario() -> None:
    scenarios = {
        "S2": {"median": {"records_per_s": 600, "peer_quix_records_per_s": 300, "ours_vs_quix": 2.0,
                          "peer_naive_records_per_s": 200, "ours_vs_naive": 3.0,
                          "peer_flink_agents_error": "timed out"}},
        "S3": {"median": {"200ms_mi256_records_per_s": 1200, "200ms_mi256_peer_quix_records_per_s": 5,
                          "200ms_mi256_ours_vs_quix": 240.0}},
        "S4": {"median": {"speedup": 3.7}},
    }
    rows = report.peer_rows(scenarios)
    assert [(r["scenario"], r["prefix"], r["ours"]) for r in rows] == [("S2", "", 600), ("S3", "200ms_mi256_", 1200)]
    assert rows[0]["peers"]["flink_agents"]["error"] == "timed out"
    assert rows[1]["peers"]["quix"]["ratio"] == 240.0 and "naive" not in rows[1]["peers"]


def test_the_machine_bound_is_the_cores_over_the_cpu_every_process_spends_per_record() -> None:
    # The latest full run at 200 ms / 1,024: worker 0.278, stub 0.183, broker 0.135, bench 0.051 ms.
    assert round(machine_bound_per_s(2, 0.000647)) == 3091
    assert machine_bound_per_s(2, 0.0) == float("inf")
