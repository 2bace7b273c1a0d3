"""A memory agent: remembers what each user tells it and recalls the nearest facts when asked.

Long-term memory lives in each key's own state (here: one key per user), so on the worker it is
committed with the outputs, exactly once. The agent configuration names the embedding model
(``resources/agent_config.yaml``: ``long-term-memory.embedding-model-setup: embeddings``).

Input: ``{"user": ..., "message": ...}``. A message starting with ``remember`` is stored; any other is
answered with the two nearest facts as context. Output: ``{"user", "message", "remembered" | "recalled",
"facts"}``, where ``facts`` is how many facts the user's memory set holds.
"""

from __future__ import annotations

from agentplan import (
    Agent,
    ChatMessage,
    ChatRequestEvent,
    ChatResponseEvent,
    InputEvent,
    MessageRole,
    OpenAIChatModelConnection,
    OpenAIChatModelSetup,
    OpenAIEmbeddingModelConnection,
    OpenAIEmbeddingModelSetup,
    OutputEvent,
    Prompt,
    ResourceDescriptor,
    RunnerContext,
    action,
    chat_model_connection,
    chat_model_setup,
    embedding_model_connection,
    embedding_model_setup,
    prompt,
)

MEMORY_SET = "facts"


class MemoryAgent(Agent):
    @embedding_model_connection
    @staticmethod
    def embedder() -> ResourceDescriptor:
        return ResourceDescriptor(clazz=OpenAIEmbeddingModelConnection, request_timeout=30.0)

    @embedding_model_setup
    @staticmethod
    def embeddings() -> ResourceDescriptor:
        return ResourceDescriptor(clazz=OpenAIEmbeddingModelSetup, connection="embedder")

    @chat_model_connection
    @staticmethod
    def llm() -> ResourceDescriptor:
        return ResourceDescriptor(clazz=OpenAIChatModelConnection, timeout=60.0)

    @prompt
    @staticmethod
    def reply_prompt() -> Prompt:
        return Prompt.from_messages([
            ChatMessage(role=MessageRole.SYSTEM, content="What you know about the user:\n{facts}"),
            ChatMessage(role=MessageRole.USER, content="{message}"),
        ])

    @chat_model_setup
    @staticmethod
    def assistant() -> ResourceDescriptor:
        return ResourceDescriptor(clazz=OpenAIChatModelSetup, connection="llm", prompt="reply_prompt")

    @action(InputEvent)
    @staticmethod
    async def handle(event: InputEvent, ctx: RunnerContext) -> None:
        user, message = event.input["user"], event.input["message"]
        facts = ctx.long_term_memory.get_memory_set(MEMORY_SET)
        if message.lower().startswith("remember "):
            fact = message[len("remember "):]
            # Flink Agents' idiom; here the memory set journals its own embedding call.
            await ctx.durable_execute_async(facts.add, items=fact, metadatas={"user": user})
            ctx.send_event(OutputEvent(output={"user": user, "message": message, "remembered": fact,
                                               "facts": facts.size()}))
            return
        recalled = [item.value for item in await facts.asearch(message, limit=2)]
        ctx.sensory_memory.set("turn", {"user": user, "message": message, "recalled": recalled,
                                        "facts": facts.size()})
        ctx.send_event(ChatRequestEvent(model="assistant", messages=[ChatMessage(
            role=MessageRole.USER, content="", extra_args={"facts": "\n".join(recalled), "message": message})]))

    @action(ChatResponseEvent)
    @staticmethod
    def reply(event: ChatResponseEvent, ctx: RunnerContext) -> None:
        ctx.send_event(OutputEvent(output={**ctx.sensory_memory.get("turn"), "answer": event.response.content}))
