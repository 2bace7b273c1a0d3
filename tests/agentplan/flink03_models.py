"""Stand-in models for the Flink Agents 0.3.1-style example agents (examples/flink03): deterministic
answers served by the LLM stub over HTTP, so the agents' prompts, tools and schemas are exercised
through the real ``openai`` client."""

from __future__ import annotations

import json
import re
from typing import Any

from agentplan.testing.llm_stub import StubReply, default_responder

_REVIEW = re.compile(r"Product review: (\{.*\})", re.DOTALL)
_QUESTION = re.compile(r"Question (\d+): (.*)", re.DOTALL)
_ARITHMETIC = re.compile(r"What is \(([-\d.]+) \+ ([-\d.]+)\) \* ([-\d.]+)\?")
_FAQ_QUESTION = re.compile(r"Customer question: (.*)", re.DOTALL)
_FAQ_FIRST_ENTRY = re.compile(r"FAQ entries:\n1\. ([^\n]*)")
_ASK_SUM = re.compile(r"Use the add tool to add (-?\d+) and (-?\d+)")
_TIMES = re.compile(r"What is (\d+) times (\d+)\?")
_SUM_OF = re.compile(r"What is the sum of ([\d ]+)\?")
_POWER = re.compile(r"What is (\d+) to the power (\d+)\?")
_STATUS = re.compile(r"Service: (\S+)\nIncidents of the last hour, one per line:\n(.*)\nAnswer with JSON only",
                     re.DOTALL)
_CATEGORIES = (("billing", ("refund", "charge", "invoice")), ("shipping", ("delivery", "package", "arrive")),
               ("technical", ("error", "crash", "login")))


def _messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in request.get("messages") or [] if isinstance(m, dict)]


def _user_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(str(m.get("content") or "") for m in messages if m.get("role") == "user")


def review_score(review: str) -> int:
    text = review.lower()
    if any(word in text for word in ("love", "great", "excellent")):
        return 5
    if any(word in text for word in ("damaged", "broken", "terrible")):
        return 1
    return 3


def _review(messages: list[dict[str, Any]]) -> StubReply | None:
    match = _REVIEW.search(_user_text(messages))
    if match is None:
        return None
    review = json.loads(match.group(1))
    called = any(m.get("role") == "tool" for m in messages)
    if "damaged" in review["review"].lower() and not called:
        return StubReply(tool_calls=[("notify_shipping_manager", {"id": review["id"], "review": review["review"]})])
    score = review_score(review["review"])
    reasons = ["shipping damage"] if score == 1 else ["product quality"] if score == 5 else ["mixed feelings"]
    return StubReply(content=json.dumps({"id": review["id"], "score": score, "reasons": reasons}))


def question_category(question: str) -> str:
    text = question.lower()
    return next((name for name, words in _CATEGORIES if any(w in text for w in words)), "other")


def _question(messages: list[dict[str, Any]]) -> StubReply | None:
    match = _QUESTION.search(_user_text(messages))
    if match is None:
        return None
    question = match.group(2)
    answer = {"index": int(match.group(1)), "category": question_category(question),
              "urgent": "urgent" in question.lower()}
    return StubReply(content=json.dumps(answer))


def _arithmetic(messages: list[dict[str, Any]]) -> StubReply | None:
    match = _ARITHMETIC.search(_user_text(messages))
    if match is None:
        return None
    a, b, c = (float(g) for g in match.groups())
    results = [json.loads(str(m.get("content"))) for m in messages if m.get("role") == "tool"]
    if not results:
        return StubReply(tool_calls=[("add", {"a": a, "b": b})])
    if len(results) == 1:
        return StubReply(tool_calls=[("multiply", {"a": results[0], "b": c})])
    return StubReply(content=json.dumps({"result": results[1], "explanation": f"({a} + {b}) * {c}"}))


def _faq(messages: list[dict[str, Any]]) -> StubReply | None:
    """Quotes the first (nearest) FAQ entry of the context it was given."""
    question = _FAQ_QUESTION.search(_user_text(messages))
    if question is None:
        return None
    system = "\n".join(str(m.get("content") or "") for m in messages if m.get("role") == "system")
    entry = _FAQ_FIRST_ENTRY.search(system)
    return StubReply(content=f"From the FAQ: {entry.group(1)}" if entry else "The FAQ does not say.")


def _status(messages: list[dict[str, Any]]) -> StubReply | None:
    """Reads the status digest prompt wherever it was sent (the setup's text prompt: a system message)."""
    match = _STATUS.search("\n".join(str(m.get("content") or "") for m in messages))
    if match is None:
        return None
    incidents = [line for line in match.group(2).splitlines() if line != "(none)"]
    status = "down" if any("outage" in i.lower() for i in incidents) else "degraded" if incidents else "ok"
    return StubReply(content=json.dumps({"status": status, "summary": f"{len(incidents)} incident(s)"}))


def _tool_results(messages: list[dict[str, Any]]) -> list[str]:
    return [str(m.get("content") or "") for m in messages if m.get("role") == "tool"]


def _ask_sum(messages: list[dict[str, Any]]) -> StubReply | None:
    """Calls the MCP server's add tool, then reports the server's result (never adds by itself)."""
    match = _ASK_SUM.search(_user_text(messages))
    if match is None:
        return None
    a, b = (int(g) for g in match.groups())
    results = _tool_results(messages)
    if not results:
        return StubReply(tool_calls=[("add", {"a": a, "b": b})])
    result = json.loads(results[0])
    return StubReply(content=f"{a} + {b} = {result['result'] if isinstance(result, dict) else result}")


def _skill_command(question: str) -> str | None:
    if match := _TIMES.search(question):
        return f"expr {match.group(1)} '*' {match.group(2)}"
    if match := _SUM_OF.search(question):
        return "./scripts/sum.sh " + " ".join(match.group(1).split())
    if match := _POWER.search(question):  # a command the skill's allowed_commands do not include
        return f"python3 -c 'print({match.group(1)} ** {match.group(2)})'"
    return None


def _skill(request: dict[str, Any], messages: list[dict[str, Any]]) -> StubReply | None:
    """Reads the math-calculator skill, runs the command it suggests with bash, then reports the
    command's output (or its refusal): the arithmetic is the command's, never the stub's."""
    offered = {t["function"]["name"] for t in request.get("tools") or []}
    command = _skill_command(_user_text(messages))
    if command is None or not {"load_skill", "bash"} <= offered:
        return None
    results = _tool_results(messages)
    if not results:
        return StubReply(tool_calls=[("load_skill", {"name": "math-calculator"})])
    if len(results) == 1:
        if "# Math calculator" not in results[0]:
            return StubReply(content=f"could not read the skill: {results[0]}")
        return StubReply(tool_calls=[("bash", {"command": command})])
    ran = json.loads(results[1])
    if "refused" in ran:
        return StubReply(content=f"refused: {ran['refused']}")
    return StubReply(content=f"The answer is {ran['stdout'].strip()}.")


def flink03_responder(request: dict[str, Any]) -> StubReply:
    """Answers for the example agents; anything else gets the stub's default answer."""
    messages = _messages(request)
    skill_reply = _skill(request, messages)
    if skill_reply is not None:
        return skill_reply
    for answer in (_review, _question, _arithmetic, _faq, _ask_sum, _status):
        reply = answer(messages)
        if reply is not None:
            return reply
    return default_responder(request)
