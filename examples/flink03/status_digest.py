"""Service status digest (Flink Agents 0.3.1 style): a text prompt on the chat model setup, which the
setup sends as its system message, filled through ``prompt_args``; the request itself adds only an
empty user message (not sent), and the JSON answer becomes the output."""

import json
import os

from pydantic import BaseModel

from agentplan import (
    Agent,
    ChatMessage,
    ChatRequestEvent,
    ChatResponseEvent,
    Event,
    InputEvent,
    MessageRole,
    OutputEvent,
    Prompt,
    ResourceDescriptor,
    ResourceName,
    RunnerContext,
    action,
    chat_model_connection,
    chat_model_setup,
    prompt,
)


class ServiceIncidents(BaseModel):
    service: str
    incidents: list[str]


class StatusDigest(BaseModel):
    service: str
    status: str
    summary: str


status_digest_prompt = Prompt.from_text(
    """You write the status line of one service for the on-call channel.
Service: {service}
Incidents of the last hour, one per line:
{incidents}
Answer with JSON only: {"status": "ok" or "degraded" or "down", "summary": "<at most 12 words>"}"""
)


class StatusDigestAgent(Agent):
    @prompt
    @staticmethod
    def status_digest_prompt() -> Prompt:
        return status_digest_prompt

    @chat_model_connection
    @staticmethod
    def openai_connection() -> ResourceDescriptor:
        return ResourceDescriptor(
            clazz=ResourceName.ChatModel.OPENAI_COMPLETIONS_CONNECTION,
            api_base_url=os.environ.get("OPENAI_BASE_URL"),
            api_key=os.environ.get("OPENAI_API_KEY"),
        )

    @chat_model_setup
    @staticmethod
    def digest_model() -> ResourceDescriptor:
        return ResourceDescriptor(
            clazz=ResourceName.ChatModel.OPENAI_COMPLETIONS_SETUP,
            connection="openai_connection",
            model=os.environ.get("OPENAI_MODEL", "qwen3:8b"),
            prompt="status_digest_prompt",
        )

    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def process_input(event: Event, ctx: RunnerContext) -> None:
        report = ServiceIncidents.model_validate(InputEvent.from_event(event).input)
        ctx.short_term_memory.set("service", report.service)
        ctx.send_event(
            ChatRequestEvent(
                model="digest_model",
                messages=[ChatMessage(role=MessageRole.USER)],
                prompt_args={"service": report.service, "incidents": "\n".join(report.incidents) or "(none)"},
            )
        )

    @action(ChatResponseEvent.EVENT_TYPE)
    @staticmethod
    def process_chat_response(event: Event, ctx: RunnerContext) -> None:
        answer = json.loads(ChatResponseEvent.from_event(event).response.content)
        ctx.send_event(
            OutputEvent(
                output=StatusDigest(
                    service=ctx.short_term_memory.get("service"),
                    status=answer["status"],
                    summary=answer["summary"],
                )
            )
        )
