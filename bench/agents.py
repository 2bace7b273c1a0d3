"""Resources the benchmark's workers load by import path (``--resource local_llm=bench.agents:...``)."""

from __future__ import annotations

import functools
import os
from typing import Any

from agentplan import OpenAIChatModelConnection, ResourceDescriptor
from agentplan.chat_message import ChatMessage, MessageRole
from agentplan.chat_models import BaseChatModelConnection, ChatResult
from agentplan.testing.llm_stub import default_responder


class InstantChatModelConnection(BaseChatModelConnection):
    """A chat model answering in-process, at once, with the stub's deterministic replies.

    Isolates the worker's own cost (engine, state, transactions) from any HTTP client or server.
    """

    async def chat(self, messages: list[ChatMessage], *, model: str, tools: list[dict[str, Any]] | None = None,
                   **params: Any) -> ChatResult:
        return ChatResult(message=ChatMessage(role=MessageRole.ASSISTANT, content=_answer(model, tuple(
            (m.role.value, m.content or "") for m in messages))), model=model)


@functools.lru_cache(maxsize=4096)
def _answer(model: str, messages: tuple[tuple[str, str], ...]) -> str:
    """Same request, same answer: each distinct prompt is answered once (the model is meant to cost nothing)."""
    request = {"model": model, "messages": [{"role": role, "content": content} for role, content in messages]}
    return default_responder(request).content or ""


instant_llm_descriptor = ResourceDescriptor(clazz=InstantChatModelConnection)

#: The stub over HTTP with its endpoint under a limiter (``python -m bench.limits``): adaptive concurrency,
#: plus a fleet-wide requests/minute when ``BENCH_LLM_RPM`` is set.
limited_llm_descriptor = ResourceDescriptor(
    clazz=OpenAIChatModelConnection, timeout=30.0, max_concurrency=256,
    requests_per_minute=float(os.environ["BENCH_LLM_RPM"]) if os.environ.get("BENCH_LLM_RPM") else None)

#: The stub over HTTP with a connection pool for 10,000 calls at once (S8 holds that many in flight).
wide_http_llm_descriptor = ResourceDescriptor(
    clazz=OpenAIChatModelConnection, api_base_url=os.environ.get("OPENAI_BASE_URL", "http://localhost:4000/v1"),
    api_key=os.environ.get("OPENAI_API_KEY", "sk-local"), timeout=300.0, max_retries=1, max_connections=10_000)
