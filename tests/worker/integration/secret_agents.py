"""An agent for the secret-leak test (importable by worker subprocesses)."""

from __future__ import annotations

import os

from agentplan import (
    Agent,
    ChatMessage,
    ChatRequestEvent,
    ChatResponseEvent,
    InputEvent,
    MessageRole,
    OpenAIChatModelConnection,
    OpenAIChatModelSetup,
    OutputEvent,
    ResourceDescriptor,
    RunnerContext,
    action,
    chat_model_setup,
)

# Passed with ``--resource keyed_llm=...``: the API key becomes part of the compiled plan, the way a
# deployment that configures keys in code would have it.
keyed_connection = ResourceDescriptor(clazz=OpenAIChatModelConnection, api_key=os.environ.get("OPENAI_API_KEY"),
                                      timeout=5.0, max_retries=0)


class CanaryAgent(Agent):
    """Asks the model about each input and remembers the text; ``fail`` inputs raise with the
    whole input in the message, as careless agent code does."""

    @chat_model_setup
    @staticmethod
    def model() -> ResourceDescriptor:
        return ResourceDescriptor(clazz=OpenAIChatModelSetup, connection="keyed_llm", model="stub")

    @action(InputEvent)
    @staticmethod
    def ask(event: InputEvent, ctx: RunnerContext) -> None:
        if event.input.get("fail"):
            raise ValueError(f"cannot handle {event.input['text']}")
        ctx.short_term_memory.set("last_text", event.input["text"])
        ctx.send_event(ChatRequestEvent(model="model",
                                        messages=[ChatMessage(role=MessageRole.USER, content=event.input["text"])]))

    @action(ChatResponseEvent)
    @staticmethod
    def answer(event: ChatResponseEvent, ctx: RunnerContext) -> None:
        ctx.send_event(OutputEvent(output={"answer": event.response.content}))
