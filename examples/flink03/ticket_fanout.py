"""Support-ticket triage (Flink Agents 0.3.1 style): one ticket fans out into a custom event per
question, each classified by the model with an output schema; the answers are gathered in short-term
memory and leave as one result through a unified ``Event(type=...)``."""

import os
from typing import Any, ClassVar

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
    OutputSchema,
    Prompt,
    ResourceDescriptor,
    ResourceName,
    RunnerContext,
    action,
    chat_model_connection,
    chat_model_setup,
    prompt,
)


class QuestionClassification(BaseModel):
    index: int
    category: str
    urgent: bool


class QuestionEvent(Event):
    """One question of a ticket, to classify."""

    EVENT_TYPE: ClassVar[str] = "ticket_question"

    def __init__(self, ticket_id: str, index: int, question: str, **kwargs: Any) -> None:
        super().__init__(
            type=QuestionEvent.EVENT_TYPE,
            attributes={"ticket_id": ticket_id, "index": index, "question": question},
            **kwargs,
        )

    @classmethod
    def from_event(cls, event: Event) -> "QuestionEvent":
        result = cls(
            ticket_id=event.get_attr("ticket_id"),
            index=event.get_attr("index"),
            question=event.get_attr("question"),
        )
        result.id = event.id
        return result

    @property
    def ticket_id(self) -> str:
        return self.get_attr("ticket_id")

    @property
    def index(self) -> int:
        return self.get_attr("index")

    @property
    def question(self) -> str:
        return self.get_attr("question")


TICKET_CLASSIFIED = "ticket_classified"

classify_prompt = Prompt.from_messages(
    messages=[
        ChatMessage(
            role=MessageRole.SYSTEM,
            content="Classify one question of a support ticket as billing, shipping, technical or other, and "
            "say whether it is urgent. Echo the question index.",
        ),
        ChatMessage(role=MessageRole.USER, content="Question {index}: {question}"),
    ],
)


class TicketTriageAgent(Agent):
    @prompt
    @staticmethod
    def classify_prompt() -> Prompt:
        return classify_prompt

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
    def classifier() -> ResourceDescriptor:
        return ResourceDescriptor(
            clazz=ResourceName.ChatModel.OPENAI_COMPLETIONS_SETUP,
            connection="openai_connection",
            model=os.environ.get("OPENAI_MODEL", "qwen3:8b"),
            prompt="classify_prompt",
        )

    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def split_ticket(event: Event, ctx: RunnerContext) -> None:
        ticket = InputEvent.from_event(event).input
        questions = ticket["questions"]
        ctx.short_term_memory.set("ticket_id", ticket["id"])
        ctx.short_term_memory.set("expected", len(questions))
        ctx.short_term_memory.new_object("answers", overwrite=True)
        for index, question in enumerate(questions):
            ctx.send_event(QuestionEvent(ticket_id=ticket["id"], index=index, question=question))

    @action(QuestionEvent.EVENT_TYPE)
    @staticmethod
    def classify_question(event: Event, ctx: RunnerContext) -> None:
        question = QuestionEvent.from_event(event)
        ctx.send_event(
            ChatRequestEvent(
                model="classifier",
                messages=[ChatMessage(role=MessageRole.USER, content="")],
                prompt_args={"index": question.index, "question": question.question},
                output_schema=OutputSchema(output_schema=QuestionClassification),
            )
        )

    @action(ChatResponseEvent.EVENT_TYPE)
    @staticmethod
    def gather(event: Event, ctx: RunnerContext) -> None:
        response = ChatResponseEvent.from_event(event).response
        classification = QuestionClassification.model_validate(response.extra_args["structured_output"])
        answers = ctx.short_term_memory.get("answers")
        answers.set(str(classification.index), classification.model_dump(mode="json"))
        if len(answers.get_field_names()) == ctx.short_term_memory.get("expected"):
            ordered = [answers.get(str(i)) for i in range(ctx.short_term_memory.get("expected"))]
            ctx.send_event(
                Event(
                    type=TICKET_CLASSIFIED,
                    attributes={"ticket_id": ctx.short_term_memory.get("ticket_id"), "questions": ordered},
                )
            )

    @action(TICKET_CLASSIFIED)
    @staticmethod
    def emit(event: Event, ctx: RunnerContext) -> None:
        questions = event.get_attr("questions")
        ctx.send_event(
            OutputEvent(
                output={
                    "ticket_id": event.get_attr("ticket_id"),
                    "categories": [q["category"] for q in questions],
                    "urgent": any(q["urgent"] for q in questions),
                }
            )
        )
