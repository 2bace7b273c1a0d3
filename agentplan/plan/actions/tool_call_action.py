"""The built-in tool action: runs the tools a model asked for, each as a durable call.

A request that calls a tool marked ``requires_approval`` first parks the run on an
``ApprovalRequestEvent`` of kind ``tool`` (timeout: the ``tool_approval_timeout_s`` setting, none by
default); the decision (or timeout) comes back to this action. Approved, the request's tools run;
rejected or timed out, each call gets an error result, which the model sees.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from agentplan import codec
from agentplan.approvals import TOOL_APPROVAL, ApprovalDecisionEvent, ApprovalRequestEvent, ApprovalTimeoutEvent
from agentplan.events import Event, ToolRequestEvent, ToolResponseEvent
from agentplan.exceptions import ResourceError, TransientError
from agentplan.resources import ResourceType
from agentplan.runner_context import RunnerContext
from agentplan.runtime.observe import label_call

logger = logging.getLogger(__name__)

TOOL_ACTION = "tool_call_action"
_AWAITING_APPROVAL = "__tool_approval__"  # sensory memory: the tool request a decision is awaited for


def _own_tool(ctx: RunnerContext, model: str, name: str) -> Any:
    """A tool the requesting setup brings itself (the skills' load_skill and bash, bound to its policy)."""
    try:
        setup = ctx.get_resource(model, ResourceType.CHAT_MODEL)
    except ResourceError:  # a user-sent request may name no setup
        return None
    kit = getattr(setup, "skill_kit", None)
    return kit.tool(name) if kit is not None else None


async def tool_call_action(event: ToolRequestEvent | ApprovalDecisionEvent | ApprovalTimeoutEvent,
                           ctx: RunnerContext) -> None:
    """Run requested tools one by one; failures become error results, never run failures."""
    if not isinstance(event, ToolRequestEvent):
        await _decided(event, ctx)
        return
    gated = [call for call in event.tool_calls if _requires_approval(ctx, call.name)]
    if gated:
        ctx.sensory_memory.set(_AWAITING_APPROVAL, event.to_record())
        ctx.send_event(ApprovalRequestEvent(
            kind=TOOL_APPROVAL, timeout_s=ctx.config.get("tool_approval_timeout_s"),
            request={"tools": [{"name": call.name, "arguments": call.arguments} for call in gated]}))
        return
    await _run_tools(event, ctx)


def _requires_approval(ctx: RunnerContext, name: str) -> bool:
    try:
        return bool(getattr(ctx.get_resource(name, ResourceType.TOOL), "requires_approval", False))
    except ResourceError:
        return False


async def _decided(event: ApprovalDecisionEvent | ApprovalTimeoutEvent, ctx: RunnerContext) -> None:
    if event.kind != TOOL_APPROVAL:
        return  # a decision on the agent's own request
    stored = ctx.sensory_memory.get(_AWAITING_APPROVAL)
    if stored is None:
        return
    ctx.sensory_memory.delete(_AWAITING_APPROVAL)
    request = Event.from_record(stored)
    assert isinstance(request, ToolRequestEvent)
    if isinstance(event, ApprovalDecisionEvent) and event.approved:
        await _run_tools(request, ctx)
        return
    if isinstance(event, ApprovalDecisionEvent):
        reason = "rejected" + (f" by {event.decided_by}" if event.decided_by else "") + \
                 (f": {event.comment}" if event.comment else "")
    else:
        reason = "no decision came in time"
    ctx.send_event(ToolResponseEvent(request_id=request.id, errors={c.id: f"not approved: {reason}"
                                                                    for c in request.tool_calls},
                                     chat_request_id=request.chat_request_id))


async def _run_tools(event: ToolRequestEvent, ctx: RunnerContext) -> None:
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
