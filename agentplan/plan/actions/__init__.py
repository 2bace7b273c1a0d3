"""The built-in actions every plan gets, as Flink Agents' ``plan/actions/``: the chat loop, tool calls and
context retrieval."""

from __future__ import annotations

from agentplan.agent import ActionSpec
from agentplan.approvals import ApprovalDecisionEvent, ApprovalTimeoutEvent
from agentplan.events import ChatRequestEvent, ToolRequestEvent, ToolResponseEvent
from agentplan.plan.actions.chat_model_action import (
    CHAT_ACTION,
    chat_model_action,
    parse_structured,
)
from agentplan.plan.actions.context_retrieval_action import CONTEXT_RETRIEVAL_ACTION, context_retrieval_action
from agentplan.plan.actions.tool_call_action import TOOL_ACTION, tool_call_action
from agentplan.retrieval_events import ContextRetrievalRequestEvent

BUILTIN_ACTIONS = (
    ActionSpec(CHAT_ACTION, (ChatRequestEvent, ToolResponseEvent), chat_model_action),
    ActionSpec(TOOL_ACTION, (ToolRequestEvent, ApprovalDecisionEvent, ApprovalTimeoutEvent), tool_call_action),
    ActionSpec(CONTEXT_RETRIEVAL_ACTION, (ContextRetrievalRequestEvent,), context_retrieval_action),
)

__all__ = ["BUILTIN_ACTIONS", "CHAT_ACTION", "CONTEXT_RETRIEVAL_ACTION", "TOOL_ACTION", "chat_model_action",
           "context_retrieval_action", "parse_structured", "tool_call_action"]
