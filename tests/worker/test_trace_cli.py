"""``agentfleet trace KEY --file``: a key's runs as a tree, from a local runner's event log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from worker.cli import app
from worker.trace_cli import group_runs

WIDE = {"COLUMNS": "250", "TERM": "dumb", "NO_COLOR": "1"}


def rec(kind: str, ts: float, run: str = "p7", key: str = "user-1", **fields: Any) -> dict[str, Any]:
    return {"record": kind, "ts": ts, "key": key, "run": run, **fields}


# A run that a crash interrupted after its first action, resumed by the next worker: the log holds
# what committed, once: the first action (committed before the crash), then the resumed attempt.
RECORDS = [
    rec("run_started", 1000.0, source={"topic": "in", "partition": 0, "offset": 7}, trace_id="ab" * 16),
    rec("event", 1000.0, event_id="p7.0", event_type="InputEvent", action=None, event={"input": "hi"}),
    rec("action", 1000.5, action="ask", event_id="p7.0", event_type="InputEvent", attempt=1, duration_ms=0.4,
        outcome="ok", error=None, emitted=["p7.1"]),
    rec("run_resumed", 3000.0, source={"topic": "in", "partition": 0, "offset": 7}),
    rec("llm_call", 3000.2, action="chat_model_action", event_id="p7.1", model="m", duration_ms=1250.0,
        error=None, input_tokens=12, output_tokens=5, finish_reason="stop", tool_calls=[]),
    rec("action", 3000.1, action="chat_model_action", event_id="p7.1", event_type="ChatRequestEvent", attempt=1,
        duration_ms=1251.0, outcome="ok", error=None, emitted=["p7.2"]),
    rec("tool_call", 4300.0, action="lookup", event_id="p7.2", tool="price", duration_ms=2.0,
        error="KeyError: 'x'"),
    rec("action", 4299.0, action="lookup", event_id="p7.2", event_type="ChatResponseEvent", attempt=2,
        duration_ms=3.0, outcome="error", error="ValueError: no price", emitted=[]),
    rec("run_finished", 4310.0, outcome="failed", duration_ms=1310.0, error="ValueError: no price"),
    rec("run_started", 5000.0, run="p9"),
    rec("run_started", 900.0, run="p1", key="someone-else"),
]


def test_runs_are_grouped_and_calls_hang_under_their_action() -> None:
    runs = group_runs(r for r in RECORDS if r["key"] == "user-1")
    assert [r.run_id for r in runs] == ["p7", "p9"]
    actions, orphans = runs[0].actions()
    assert [(a.record["action"], [c["record"] for c in a.calls]) for a in actions] == [
        ("ask", []), ("chat_model_action", ["llm_call"]), ("lookup", ["tool_call"])]
    assert orphans == []


def test_trace_renders_the_tree_from_a_file(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n")
    result = CliRunner().invoke(app, ["trace", "user-1", "--file", str(log)], env=WIDE)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "key 'user-1': 2 runs"
    run_line = next(line for line in lines if "run p7" in line)
    for part in ("failed: ValueError: no price", "3.31 s", "tokens 12 in / 5 out", "input in[0]@7",
                 "resumed 1x after a restart", "trace " + "ab" * 16):
        assert part in run_line, (part, run_line)
    tree = "\n".join(lines)
    assert "ask on InputEvent p7.0  0.4 ms" in tree
    assert "chat_model_action on ChatRequestEvent p7.1  1.25 s" in tree
    assert "llm m  1.25 s  tokens 12 in / 5 out  finish stop" in tree
    assert "lookup on ChatResponseEvent p7.2  3.0 ms  attempt 2  error ValueError: no price" in tree
    assert "tool price  2.0 ms  error KeyError: 'x'" in tree
    assert "run p9  unfinished" in tree
    assert "someone-else" not in tree
    # the calls are drawn below their action
    assert lines.index(next(x for x in lines if "llm m" in x)) == lines.index(
        next(x for x in lines if "chat_model_action on" in x)) + 1

    last = CliRunner().invoke(app, ["trace", "user-1", "--file", str(log), "--last", "1"], env=WIDE)
    assert last.exit_code == 0 and "run p7" not in last.output and "run p9" in last.output


def test_trace_of_an_unknown_key_or_a_bad_file_fails_clearly(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    log.write_text(json.dumps(RECORDS[0]) + "\n")
    missing = CliRunner().invoke(app, ["trace", "nobody", "--file", str(log)], env=WIDE)
    assert missing.exit_code == 1 and "no event-log records for key 'nobody'" in missing.output
    log.write_text("{not json\n")
    broken = CliRunner().invoke(app, ["trace", "user-1", "--file", str(log)], env=WIDE)
    assert broken.exit_code == 2 and f"file: {log}:1 is not a JSON line" in broken.output
