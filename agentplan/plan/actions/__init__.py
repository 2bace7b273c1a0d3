"""The built-in actions every plan gets, as Flink Agents' ``plan/actions/``: the chat loop and tool calls."""

from __future__ import annotations

from agentplan.agent import ActionSpec
from agentplan.approvals import ApprovalDecisionEvent, ApprovalTimeoutEvent
from agentplan.events import ChatRequestEvent, ToolRequestEvent, ToolResponseEvent
from agentplan.plan.actions.chat_model_action import (
    CHAT_ACTION,
    chat_model_action,
    parse_structured,
)
from agentplan.plan.actions.tool_call_action import TOOL_ACTION, tool_call_action

BUILTIN_ACTIONS = (
    ActionSpec(CHAT_ACTION, (ChatRequestEvent, ToolResponseEvent), chat_model_action),
    ActionSpec(TOOL_ACTION, (ToolRequestEvent, ApprovalDecisionEvent, ApprovalTimeoutEvent), tool_call_action),
)

__all__ = ["BUILTIN_ACTIONS", "CHAT_ACTION", "TOOL_ACTION", "chat_model_action", "parse_structured",
           "tool_call_action"]
