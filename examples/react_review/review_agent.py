"""The review agent: a ReActAgent with one tool and a pydantic output schema.

Each input is a shopper's question about a product. The model calls ``assess_product`` (a plain
function registered as a tool), and its final answer is parsed into :class:`ReviewDecision`.
"""

import os

from pydantic import BaseModel

from agentplan import ChatMessage, MessageRole, OpenAIChatModelSetup, Prompt, ReActAgent, ResourceDescriptor


class ReviewRequest(BaseModel):
    id: str
    question: str


class ReviewDecision(BaseModel):
    sku: str
    name: str
    rating: float
    price: float
    recommend: bool
    reason: str


CATALOG = {
    "KB-101": {"name": "Mechanical keyboard", "rating": 4.6, "price": 89.0},
    "MS-220": {"name": "Wireless mouse", "rating": 3.2, "price": 25.0},
    "HD-330": {"name": "Noise-cancelling headphones", "rating": 4.4, "price": 199.0},
    "MN-27": {"name": "27-inch monitor", "rating": 4.1, "price": 249.0},
}
MIN_RATING = 4.0


def assess_product(sku: str, budget: float) -> dict:
    """Look up a product's rating and price and check it against the shopper's budget.

    Args:
        sku: The product's stock keeping unit, e.g. "KB-101".
        budget: The most the shopper wants to spend.
    """
    product = CATALOG.get(sku)
    if product is None:
        raise KeyError(f"unknown product {sku!r}; known: {sorted(CATALOG)}")
    if product["rating"] < MIN_RATING:
        recommend, reason = False, f"rated {product['rating']}, below {MIN_RATING}"
    elif product["price"] > budget:
        recommend, reason = False, f"costs {product['price']}, over the budget of {budget}"
    else:
        recommend, reason = True, f"rated {product['rating']} and within the budget of {budget}"
    return {"sku": sku, **product, "recommend": recommend, "reason": reason}


review_prompt = Prompt.from_messages([
    ChatMessage(
        role=MessageRole.SYSTEM,
        content="You help shoppers decide whether to buy a product. Always call the assess_product tool "
                "with the product's sku and the shopper's budget, then answer with the tool's findings "
                "as JSON with the fields sku, name, rating, price, recommend and reason.",
    ),
    ChatMessage(role=MessageRole.USER, content="{question}"),
])


def build_agent(connection: str) -> ReActAgent:
    """The agent, using the chat model connection registered under ``connection``."""
    agent = ReActAgent(
        chat_model=ResourceDescriptor(
            clazz=OpenAIChatModelSetup,
            connection=connection,
            model=os.environ.get("OPENAI_MODEL", "qwen3"),
            tools=["assess_product"],
            temperature=0.0,
        ),
        prompt=review_prompt,
        output_schema=ReviewDecision,
    )
    agent.add_resource("assess_product", assess_product)
    return agent
