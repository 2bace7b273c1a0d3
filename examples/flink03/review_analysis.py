"""Product review analysis (Flink Agents 0.3.1 style): a prompt filled through ``prompt_args``, a tool
the model calls for shipping complaints, and a JSON answer turned into a pydantic result."""

import json
import logging
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
    tool,
)


class ProductReview(BaseModel):
    id: str
    review: str


class ProductReviewAnalysisRes(BaseModel):
    id: str
    score: int
    reasons: list[str]


review_analysis_prompt = Prompt.from_messages(
    messages=[
        ChatMessage(
            role=MessageRole.SYSTEM,
            content="""Analyze the user review and product information to determine a satisfaction score
(1-5) and the reasons for it. If the review complains about shipping damage, first call the
notify_shipping_manager tool with the product id and the review.
Reply with JSON only: {"id": "<product id>", "score": <1-5>, "reasons": ["reason", ...]}""",
        ),
        ChatMessage(role=MessageRole.USER, content="Product review: {input}"),
    ],
)

#: Notifications sent by the tool in this process (a real agent would call a ticketing system).
SHIPPING_NOTIFICATIONS: list[dict[str, str]] = []


class ReviewAnalysisAgent(Agent):
    @prompt
    @staticmethod
    def review_analysis_prompt() -> Prompt:
        return review_analysis_prompt

    @tool
    @staticmethod
    def notify_shipping_manager(id: str, review: str) -> str:
        """Notify the shipping manager when a product received a negative review due to shipping damage.

        Parameters
        ----------
        id : str
            The id of the product that received the negative review.
        review : str
            The negative review content.
        """
        SHIPPING_NOTIFICATIONS.append({"id": id, "review": review})
        return f"shipping manager notified about product {id}"

    @chat_model_connection
    @staticmethod
    def openai_connection() -> ResourceDescriptor:
        return ResourceDescriptor(
            clazz=ResourceName.ChatModel.OPENAI_COMPLETIONS_CONNECTION,
            api_base_url=os.environ.get("OPENAI_BASE_URL"),
            api_key=os.environ.get("OPENAI_API_KEY"),
            timeout=60.0,
        )

    @chat_model_setup
    @staticmethod
    def review_analysis_model() -> ResourceDescriptor:
        return ResourceDescriptor(
            clazz=ResourceName.ChatModel.OPENAI_COMPLETIONS_SETUP,
            connection="openai_connection",
            model=os.environ.get("OPENAI_MODEL", "qwen3:8b"),
            prompt="review_analysis_prompt",
            tools=["notify_shipping_manager"],
        )

    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def process_input(event: Event, ctx: RunnerContext) -> None:
        input_event = InputEvent.from_event(event)
        review = ProductReview.model_validate(input_event.input)
        ctx.short_term_memory.set("id", review.id)
        ctx.send_event(
            ChatRequestEvent(
                model="review_analysis_model",
                messages=[ChatMessage(role=MessageRole.USER, content="")],
                prompt_args={"input": review.model_dump_json()},
            )
        )

    @action(ChatResponseEvent.EVENT_TYPE)
    @staticmethod
    def process_chat_response(event: Event, ctx: RunnerContext) -> None:
        response = ChatResponseEvent.from_event(event).response
        try:
            content = json.loads(response.content)
            ctx.send_event(
                OutputEvent(
                    output=ProductReviewAnalysisRes(
                        id=ctx.short_term_memory.get("id"),
                        score=int(content["score"]),
                        reasons=content["reasons"],
                    )
                )
            )
        except Exception:
            logging.exception("Error processing chat response %s", response.content)
            raise
