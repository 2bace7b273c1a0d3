"""FunctionTool: JSON schema from signature and Google docstring; validated calls; sync and async."""

from __future__ import annotations

import threading
from typing import Literal

import pytest

from agentplan import FunctionTool
from agentplan.exceptions import ResourceError
from tests.agentplan.support import run_async


def lookup_product(sku: str, include_reviews: bool = False, currency: Literal["EUR", "USD"] = "EUR",
                   limit: int | None = None) -> dict[str, object]:
    """Look up a product in the catalog.

    Longer text that is not part of the summary.

    Args:
        sku: The stock keeping unit, e.g. "KB-101".
        include_reviews (bool): Whether to include review
            snippets in the answer.
        currency: Currency of the price.
        limit: Max reviews.

    Returns:
        The product record.
    """
    return {"sku": sku, "reviews": include_reviews, "currency": currency, "limit": limit}


async def async_add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: first
        b: second
    """
    return a + b


def no_doc(x: float):  # type: ignore[no-untyped-def]
    return x * 2


def test_schema_from_signature_and_docstring() -> None:
    tool = FunctionTool(lookup_product)
    schema = tool.schema()
    assert schema["type"] == "function"
    function = schema["function"]
    assert function["name"] == "lookup_product"
    assert function["description"] == "Look up a product in the catalog."
    params = function["parameters"]
    assert params["type"] == "object"
    assert params["required"] == ["sku"]
    assert params["additionalProperties"] is False
    props = params["properties"]
    assert set(props) == {"sku", "include_reviews", "currency", "limit"}
    assert props["sku"] == {"type": "string", "description": 'The stock keeping unit, e.g. "KB-101".'}
    assert props["include_reviews"]["type"] == "boolean"
    assert props["include_reviews"]["default"] is False
    assert props["include_reviews"]["description"] == "Whether to include review snippets in the answer."
    assert props["currency"]["enum"] == ["EUR", "USD"]
    assert props["currency"]["description"] == "Currency of the price."
    assert {"type": "integer"} in props["limit"]["anyOf"]
    assert all("title" not in p for p in props.values())


def test_name_and_description_overrides_and_missing_docstring() -> None:
    tool = FunctionTool(no_doc)
    assert tool.description == "no_doc"
    props = tool.schema()["function"]["parameters"]["properties"]
    assert props["x"]["type"] == "number"
    assert "description" not in props["x"]
    named = FunctionTool(no_doc, name="double", description="Doubles x.")
    assert named.schema()["function"]["name"] == "double"
    assert named.schema()["function"]["description"] == "Doubles x."


def test_sync_tool_call_validates_and_coerces() -> None:
    tool = FunctionTool(lookup_product)
    result = run_async(tool.call({"sku": "A1", "include_reviews": True}))
    assert result == {"sku": "A1", "reviews": True, "currency": "EUR", "limit": None}


@pytest.mark.parametrize(
    "arguments, fragment",
    [({}, "sku"), ({"sku": "A", "limit": "many"}, "limit"), ({"sku": "A", "currency": "GBP"}, "currency"),
     ({"sku": "A", "colour": "red"}, "colour")],
    ids=["missing", "wrong-type", "not-in-enum", "unknown-arg"],
)
def test_invalid_arguments_raise(arguments: dict[str, object], fragment: str) -> None:
    tool = FunctionTool(lookup_product)
    with pytest.raises(ValueError, match="invalid arguments for tool 'lookup_product'") as info:
        run_async(tool.call(arguments))
    assert fragment in str(info.value)


def test_async_tool() -> None:
    tool = FunctionTool(async_add)
    assert tool.is_async
    assert run_async(tool.call({"a": 2, "b": 3})) == 5
    assert tool.schema()["function"]["parameters"]["properties"]["a"]["description"] == "first"


def test_sync_tool_runs_off_the_event_loop_thread() -> None:
    seen: list[int] = []

    def where() -> str:
        """Report the thread."""
        seen.append(threading.get_ident())
        return "ok"

    async def main() -> str:
        loop_thread = threading.get_ident()
        result = await FunctionTool(where).call({})
        assert seen and seen[0] != loop_thread
        return str(result)

    assert run_async(main()) == "ok"


def test_var_args_cannot_be_described() -> None:
    def splat(*args: int) -> int:
        return sum(args)

    with pytest.raises(ResourceError, match=r"\*args"):
        FunctionTool(splat)


def test_tool_errors_propagate_from_call() -> None:
    def boom(x: int) -> int:
        """Fails."""
        raise KeyError(x)

    with pytest.raises(KeyError):
        run_async(FunctionTool(boom).call({"x": 1}))
