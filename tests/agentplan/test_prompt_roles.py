"""The exact messages (roles, order, content) that reach the model for each way a prompt is used,
as Flink Agents sends them: a text prompt is a system message (``format_messages``' default role),
a message prompt keeps its messages' roles, ReActAgent formats its prompt as user messages and puts
the output-schema instruction after the first system message. Checked on the requests the LLM stub
received over HTTP through the real openai client."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from agentplan import (
    Agent,
    ChatMessage,
    ChatRequestEvent,
    ChatResponseEvent,
    InputEvent,
    MessageRole,
    OpenAIChatModelSetup,
    OutputEvent,
    Prompt,
    ReActAgent,
    ResourceDescriptor,
    RunnerContext,
)
from agentplan.chat_models import schema_instruction
from agentplan.testing.llm_stub import StubLLMServer
from tests.agentplan.conftest import EnvFactory
from tests.agentplan.support import CONNECTION


class Verdict(BaseModel):
    label: str
    score: float


def ask(event: InputEvent, ctx: RunnerContext) -> None:
    """Input ``{"messages": [[role, content], ...], "prompt_args": {...}}`` as one chat request."""
    request: dict[str, Any] = event.input
    messages = [ChatMessage(role=MessageRole(role), content=content) for role, content in request["messages"]]
    ctx.send_event(ChatRequestEvent(model="model", messages=messages, prompt_args=request.get("prompt_args", {})))


def answer(event: ChatResponseEvent, ctx: RunnerContext) -> None:
    ctx.send_event(OutputEvent(output=event.response.content))


class PromptedAgent(Agent):
    """One chat model setup with ``prompt``; each input is one request (see :func:`ask`)."""

    def __init__(self, prompt: Prompt) -> None:
        super().__init__()
        self.add_resource("model", ResourceDescriptor(clazz=OpenAIChatModelSetup, connection=CONNECTION,
                                                      model="m", prompt=prompt))
        self.add_action("ask", [InputEvent], ask)
        self.add_action("answer", [ChatResponseEvent], answer)


def run(env: Any, agent: Agent, value: Any) -> Any:
    """The output of one input (one input per run, so the stub's log is in a known order)."""
    output = env.from_list([{"key": "k", "value": value}]).apply(agent).to_list()
    env.execute()
    [[result]] = [list(entry.values()) for entry in output]
    return result


def sent(stub: StubLLMServer) -> list[list[tuple[str, str]]]:
    """Each request's messages as (role, content), in the order the stub received the requests."""
    return [[(m["role"], m["content"]) for m in request["messages"]] for request in stub.requests]


# -- (a) a text prompt on the chat model setup ------------------------------------------------------


def test_a_text_prompt_is_the_system_message(stub_llm: StubLLMServer, make_env: EnvFactory) -> None:
    prompt = Prompt.from_text("You grade {subject} answers. Reply with a grade from A to F.")
    # the 0.3 idiom: an empty user message plus prompt_args sends the prompt alone
    run(make_env(), PromptedAgent(prompt), {"messages": [["user", ""]], "prompt_args": {"subject": "history"}})
    # request messages with content follow the prompt, in their order
    result = run(make_env(), PromptedAgent(prompt), {
        "messages": [["user", "Who built Rome?"], ["assistant", "Romans."], ["user", "Grade it."]],
        "prompt_args": {"subject": "history"}})
    assert sent(stub_llm) == [
        [("system", "You grade history answers. Reply with a grade from A to F.")],
        [("system", "You grade history answers. Reply with a grade from A to F."),
         ("user", "Who built Rome?"), ("assistant", "Romans."), ("user", "Grade it.")],
    ]
    assert result == "echo: Grade it."


def test_format_messages_defaults_to_system_and_takes_a_role() -> None:
    prompt = Prompt.from_text("Summarise {topic}.")
    assert prompt.format_messages(topic="tides") == [ChatMessage(role=MessageRole.SYSTEM, content="Summarise tides.")]
    assert prompt.format_messages(role=MessageRole.USER, topic="tides")[0].role is MessageRole.USER


# -- (b) a message prompt on the chat model setup ---------------------------------------------------


def test_a_message_prompt_keeps_its_roles(stub_llm: StubLLMServer, make_env: EnvFactory) -> None:
    prompt = Prompt.from_messages([
        ChatMessage(role=MessageRole.SYSTEM, content="You translate {source} to {target}."),
        ChatMessage(role=MessageRole.USER, content="Translate: cat"),
        ChatMessage(role=MessageRole.ASSISTANT, content="chat"),
        ChatMessage(role=MessageRole.USER, content="Translate: {word}"),
    ])
    run(make_env(), PromptedAgent(prompt),
        {"messages": [["user", ""]], "prompt_args": {"source": "English", "target": "French", "word": "dog"}})
    run(make_env(), PromptedAgent(prompt),
        {"messages": [["user", "And: bird"]], "prompt_args": {"source": "English", "target": "German"}})
    assert sent(stub_llm) == [
        [("system", "You translate English to French."), ("user", "Translate: cat"), ("assistant", "chat"),
         ("user", "Translate: dog")],
        # an argument not given leaves its placeholder as it is
        [("system", "You translate English to German."), ("user", "Translate: cat"), ("assistant", "chat"),
         ("user", "Translate: {word}"), ("user", "And: bird")],
    ]
    # ``role`` applies to a text prompt only
    assert [m.role for m in prompt.format_messages(role=MessageRole.USER)] == [
        MessageRole.SYSTEM, MessageRole.USER, MessageRole.ASSISTANT, MessageRole.USER]


# -- (c) ReActAgent --------------------------------------------------------------------------------


def react_setup(**arguments: Any) -> ResourceDescriptor:
    return ResourceDescriptor(clazz=OpenAIChatModelSetup, connection=CONNECTION, model="m", **arguments)


INSTRUCTION = schema_instruction(Verdict).content
JUDGE = Prompt.from_messages([
    ChatMessage(role=MessageRole.SYSTEM, content="You judge reviews of {product}."),
    ChatMessage(role=MessageRole.USER, content="Review: {text}"),
])


def test_react_without_output_schema(stub_llm: StubLLMServer, make_env: EnvFactory) -> None:
    text_prompt = ReActAgent(chat_model=react_setup(), prompt=Prompt.from_text("Judge this review: {input}"))
    results = [run(make_env(), ReActAgent(chat_model=react_setup(), prompt=JUDGE),
                   {"product": "kettle", "text": "boils fast"}),
               run(make_env(), text_prompt, "too loud"),
               run(make_env(), ReActAgent(chat_model=react_setup()), 42)]
    assert sent(stub_llm) == [
        [("system", "You judge reviews of kettle."), ("user", "Review: boils fast")],
        [("user", "Judge this review: too loud")],  # ReAct formats its prompt as user messages
        [("user", "42")],  # no prompt: a primitive input is the user message
    ]
    assert results == ["echo: Review: boils fast", "echo: Judge this review: too loud", "echo: 42"]


def test_react_with_output_schema(stub_llm: StubLLMServer, make_env: EnvFactory) -> None:
    verdict = '[[json {"label": "good", "score": 0.9}]]'
    results = [run(make_env(), ReActAgent(chat_model=react_setup(), prompt=JUDGE, output_schema=Verdict),
                   {"product": "kettle", "text": verdict}),
               run(make_env(), ReActAgent(chat_model=react_setup(), output_schema=Verdict), verdict)]
    # The setup's own text prompt goes first (its system message), then ReAct's messages.
    env = make_env()
    env.add_resource("house_rules", Prompt.from_text("Be terse."))
    results.append(run(env, ReActAgent(chat_model=react_setup(prompt="house_rules"),
                                       prompt=Prompt.from_text("Judge: {input}"), output_schema=Verdict), verdict))
    assert sent(stub_llm) == [
        # the instruction right after the first system message: a system message of its own
        [("system", "You judge reviews of kettle."), ("system", INSTRUCTION), ("user", f"Review: {verdict}")],
        [("system", INSTRUCTION), ("user", verdict)],  # no system message: first
        [("system", "Be terse."), ("system", INSTRUCTION), ("user", f"Judge: {verdict}")],
    ]
    assert results == [Verdict(label="good", score=0.9)] * 3
