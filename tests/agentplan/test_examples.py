"""The examples run end to end against the bundled stub, and the sentiment example is a faithful
port of the seed (Flink Agents) example: only imports and endpoint/model settings differ."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from examples.react_review.review_agent import ReviewDecision
from examples.sentiment.custom_types import SentimentAnalysisResult

REPO_ROOT = Path(__file__).resolve().parents[2]
SEED = REPO_ROOT.parent / "shared" / "seeds" / "000_e9ca04747d1c70ba.txt"
EXAMPLES = REPO_ROOT / "examples"


def run_example(module: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AGENTPLAN_"))}
    proc = subprocess.run([sys.executable, "-m", module], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_sentiment_example_prints_seven_results() -> None:
    lines = run_example("examples.sentiment")
    results = [SentimentAnalysisResult.model_validate_json(line) for line in lines]
    assert [(r.id, r.sentiment) for r in results] == [
        ("1", "positive"), ("2", "negative"), ("3", "neutral"), ("4", "positive"), ("5", "negative"),
        ("7", "positive"), ("8", "negative")]
    assert all(0 <= r.confidence <= 1 and r.key_phrases for r in results)


def test_react_review_example_prints_one_decision_per_input() -> None:
    lines = run_example("examples.react_review")
    inputs = (EXAMPLES / "react_review" / "resources" / "input.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len([line for line in inputs if line.strip()]) == 4
    decisions = [ReviewDecision.model_validate_json(line) for line in lines]
    assert [(d.sku, d.recommend) for d in decisions] == [
        ("KB-101", True), ("MS-220", False), ("HD-330", False), ("MN-27", True)]
    assert "below" in decisions[1].reason and "over the budget" in decisions[2].reason


def test_rag_example_answers_from_the_nearest_faq_entries() -> None:
    results = [json.loads(line) for line in run_example("examples.rag")]
    assert [(r["id"], r["sources"][0]) for r in results] == [
        ("q1", "password"), ("q2", "shipping"), ("q3", "refund"), ("q4", "battery")]
    assert all(len(r["sources"]) == 2 and r["answer"] for r in results)


def test_memory_example_recalls_each_users_own_facts() -> None:
    results = [json.loads(line) for line in run_example("examples.memory")]
    assert [r.get("remembered") for r in results[:3]] == [
        "my dog is called Pixel", "I work night shifts at the hospital", "I am allergic to peanuts"]
    recalled = {r["message"]: r["recalled"] for r in results[3:]}
    assert recalled == {"what is my dog called": ["my dog is called Pixel", "I am allergic to peanuts"],
                        "when do I work": ["I work night shifts at the hospital"],
                        "can I eat peanuts": ["I am allergic to peanuts", "my dog is called Pixel"]}


# -- the seed port ---------------------------------------------------------------------------------

_SETTING = re.compile(r"^(api_base_url|api_key|model)\s*=")


def comparable_lines(code: str) -> list[str]:
    """Code lines without indentation (the seed lost it), blank lines, import statements (also
    parenthesised multi-line ones) and the lines choosing the endpoint, key and model."""
    lines: list[str] = []
    in_import = False
    for raw in code.splitlines():
        line = raw.strip()
        if in_import:
            in_import = not line.endswith(")")
            continue
        if line.startswith("import ") or (line.startswith("from ") and " import " in line):
            in_import = line.endswith("(")
            continue
        if not line or _SETTING.match(line):
            continue
        lines.append(line)
    return lines


def seed_block(lines: list[str], first: str, last: str) -> str:
    """The seed's code block from the line ``first`` to the next line ``last`` (both stripped)."""
    stripped = [line.strip() for line in lines]
    start = stripped.index(first)
    end = stripped.index(last, start)
    return "\n".join(lines[start:end + 1])


@pytest.fixture(scope="module")
def seed_lines() -> list[str]:
    if not SEED.is_file():
        pytest.skip(f"seed document {SEED} not available (../shared is absent)")
    return SEED.read_text(encoding="utf-8").splitlines()


def test_comparable_lines_drops_imports_and_settings() -> None:
    code = ("import os\nfrom a import (\n    B,\n)\nfrom c import d\nx = 1\n    model=os.environ['M'],\n"
            "  api_key='k',\nfrom_here = 2\nimportant = 3\n")
    assert comparable_lines(code) == ["x = 1", "from_here = 2", "important = 3"]


@pytest.mark.parametrize(
    "example, first, last",
    [("custom_types.py", "from typing import List", "key_phrases: List[str]"),
     ("sentiment_agent.py", "import json", "raise")],
)
def test_sentiment_example_is_the_seed_with_other_imports(seed_lines: list[str], example: str, first: str,
                                                          last: str) -> None:
    seed_code = seed_block(seed_lines, first, last)
    ported = (EXAMPLES / "sentiment" / example).read_text(encoding="utf-8")
    seed = comparable_lines(seed_code)
    assert len(seed) > 20  # the block was found, not an empty slice
    assert comparable_lines(ported) == seed


def test_mcp_agent_example_adds_with_the_mcp_tool() -> None:
    lines = run_example("examples.mcp_agent")
    assert [json.loads(line) for line in lines] == [
        {"id": "q1", "answer": '{"result": 42}'}, {"id": "q2", "answer": '{"result": 1166}'}]


def test_skills_agent_example_runs_the_skill_commands() -> None:
    answers = [json.loads(json.loads(line)["answer"]) for line in run_example("examples.skills_agent")]
    assert [a["stdout"] for a in answers] == ["42\n", "108\n"]
