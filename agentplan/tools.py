"""Tools: plain functions a model may call, described by a JSON schema built from the signature."""

from __future__ import annotations

import asyncio
import inspect
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from agentplan.exceptions import ResourceError
from agentplan.resources import ResourceType

_ARG_LINE = re.compile(r"^\s*(\w+)\s*(?:\([^)]*\))?\s*:\s*(.+)$")


_NUMPY_ARG = re.compile(r"^(\w+)\s*(?::.*)?$")
_NUMPY_UNDERLINE = re.compile(r"^\s*-{3,}\s*$")


def _parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Summary and per-argument descriptions from a Google-style (``Args:``) or numpy-style
    (``Parameters`` over a dashed line, as Flink Agents' examples write them) docstring."""
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    summary: list[str] = []
    args: dict[str, str] = {}
    section = "summary"
    current: str | None = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        underlined = i + 1 < len(lines) and _NUMPY_UNDERLINE.match(lines[i + 1]) is not None
        if underlined:  # a numpy section header
            section = "numpy_args" if stripped.lower() in ("parameters", "arguments", "args") else "other"
            current = None
            continue
        if _NUMPY_UNDERLINE.match(line):
            continue
        if stripped.lower() in ("args:", "arguments:", "parameters:"):
            section = "args"
            continue
        if stripped.lower() in ("returns:", "raises:", "yields:", "examples:"):
            section = "other"
            continue
        if section == "summary":
            if not stripped and summary:
                section = "body"
            elif stripped:
                summary.append(stripped)
        elif section == "args":
            match = _ARG_LINE.match(line)
            if match and not line.startswith(" " * 8):
                current = match.group(1)
                args[current] = match.group(2).strip()
            elif current and stripped:
                args[current] += " " + stripped
        elif section == "numpy_args":
            numpy_arg = _NUMPY_ARG.match(line)  # "name : type" unindented, its description indented below
            if numpy_arg and not line[:1].isspace():
                current = numpy_arg.group(1)
                args[current] = ""
            elif current and stripped:
                args[current] = f"{args[current]} {stripped}".strip()
    return " ".join(summary), args


class Tool(ABC):
    """What a model may call: a name, an OpenAI ``tools`` schema and an async ``call``.

    :class:`FunctionTool` wraps a Python function; other kinds (MCP tools, the skills' built-in
    tools) subclass this directly.
    """

    resource_type = ResourceType.TOOL
    name: str
    description: str

    @staticmethod
    def from_callable(func: Callable[..., Any]) -> FunctionTool:
        """Flink Agents 0.3's ``Tool.from_callable``: a Python function as a tool."""
        return FunctionTool(func)

    @abstractmethod
    def schema(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry for this tool."""

    @abstractmethod
    async def call(self, arguments: dict[str, Any]) -> Any:
        """Run the tool with the model's arguments; raise on failure."""


class FunctionTool(Tool):
    """A callable tool with a validated argument model."""

    def __init__(self, func: Callable[..., Any], name: str | None = None, description: str | None = None,
                 requires_approval: bool = False) -> None:
        from agentplan.approvals import marked_for_approval

        self.func = func
        # A model's call waits for a person's decision (agentplan.approvals): the tool action parks the run.
        self.requires_approval = requires_approval or marked_for_approval(func)
        self.name = name or func.__name__
        summary, arg_docs = _parse_docstring(func.__doc__)
        self.description = description or summary or self.name
        self.is_async = inspect.iscoroutinefunction(func)
        self.args_model = self._build_args_model(func, arg_docs)

    def _build_args_model(self, func: Callable[..., Any], arg_docs: dict[str, str]) -> type[BaseModel]:
        from pydantic import Field

        try:
            hints = get_type_hints(func)
        except Exception:  # unresolvable annotations: fall back to Any
            hints = {}
        fields: dict[str, Any] = {}
        for param in inspect.signature(func).parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise ResourceError(f"tool {self.name!r}: *args/**kwargs parameters cannot be described to a model")
            annotation = hints.get(param.name, Any)
            default = ... if param.default is inspect.Parameter.empty else param.default
            fields[param.name] = (annotation, Field(default, description=arg_docs.get(param.name)))
        return create_model(
            f"{self.name}_args", __config__=ConfigDict(extra="forbid"), **fields
        )

    def schema(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry for this tool."""
        params = self.args_model.model_json_schema()
        params.pop("title", None)
        for prop in params.get("properties", {}).values():
            prop.pop("title", None)
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": params},
        }

    async def call(self, arguments: dict[str, Any]) -> Any:
        try:
            validated = self.args_model.model_validate(arguments)
        except ValidationError as exc:
            raise ValueError(f"invalid arguments for tool {self.name!r}: {exc.errors(include_url=False)}") from exc
        kwargs = {name: getattr(validated, name) for name in type(validated).model_fields}
        if self.is_async:
            return await self.func(**kwargs)
        # Sync tools may block on I/O; a thread keeps other keys' runs moving.
        return await asyncio.to_thread(self.func, **kwargs)

    def __repr__(self) -> str:
        return f"FunctionTool({self.name})"
