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


def flink03_responder(request: dict[str, Any]) -> StubReply:
    """Answers for the three example agents; anything else gets the stub's default answer."""
    messages = _messages(request)
    for answer in (_review, _question, _arithmetic):
        reply = answer(messages)
        if reply is not None:
            return reply
    return default_responder(request)
