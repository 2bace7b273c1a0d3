"""The built-in tool action: runs the tools a model asked for, each as a durable call."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from agentplan import codec
from agentplan.events import ToolRequestEvent, ToolResponseEvent
from agentplan.exceptions import ResourceError, TransientError
from agentplan.resources import ResourceType
from agentplan.runner_context import RunnerContext
from agentplan.runtime.observe import label_call

logger = logging.getLogger(__name__)

TOOL_ACTION = "tool_call_action"


def _own_tool(ctx: RunnerContext, model: str, name: str) -> Any:
    """A tool the requesting setup brings itself (the skills' load_skill and bash, bound to its policy)."""
    try:
        setup = ctx.get_resource(model, ResourceType.CHAT_MODEL)
    except ResourceError:  # a user-sent request may name no setup
        return None
    kit = getattr(setup, "skill_kit", None)
    return kit.tool(name) if kit is not None else None


async def tool_call_action(event: ToolRequestEvent, ctx: RunnerContext) -> None:
    """Run requested tools one by one; failures become error results, never run failures."""
    responses: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for call in event.tool_calls:
        try:
            tool = _own_tool(ctx, event.model, call.name) or ctx.get_resource(call.name, ResourceType.TOOL)
        except ResourceError:
            errors[call.id] = f"unknown tool {call.name!r}"
            continue

        async def run(tool: Any = tool, arguments: dict[str, Any] = call.arguments) -> Any:
            result = await tool.call(arguments)
            try:
                codec.check_storable(result)
            except Exception:  # noqa: BLE001 - whatever cannot be stored is kept as its text
                result = str(result)
            return result

        label_call(ctx, "execute_tool", call.name, call_id=call.id)
        try:
            responses[call.id] = await ctx.durable_execute_async(run)
        except (asyncio.CancelledError, TransientError):
            raise  # a transient failure (server unreachable) is the engine's to retry, not the model's
        except Exception as exc:  # noqa: BLE001 - a tool's failure is reported to the model
            logger.info("tool %s failed: %r", call.name, exc)
            errors[call.id] = f"{type(exc).__name__}: {exc}"
    ctx.send_event(ToolResponseEvent(request_id=event.id, responses=responses, errors=errors,
                                     chat_request_id=event.chat_request_id))
