"""agentplan: write event-driven LLM agents the Apache Flink Agents way; run them locally or on Kafka.

Knows nothing of Kafka: the worker package drives the same engine over topics.
"""

import importlib
from typing import TYPE_CHECKING, Any

from agentplan.agent import Agent
from agentplan.approvals import ApprovalDecisionEvent, ApprovalRequestEvent, ApprovalTimeoutEvent
from agentplan.chat_message import ChatMessage, MessageRole, ToolCall
from agentplan.chat_models import (
    BaseChatModelConnection,
    BaseChatModelSetup,
    ChatResult,
)
from agentplan.config import (
    AgentConfiguration,
    AgentExecutionOptions,
    ConfigOption,
    ErrorHandlingStrategy,
    ShortTermMemoryTtlUpdate,
    ShortTermMemoryTtlVisibility,
)
from agentplan.decorators import (
    action,
    chat_model_connection,
    chat_model_setup,
    embedding_model_connection,
    embedding_model_setup,
    mcp_server,
    prompt,
    skills,
    tool,
    vector_store,
)
from agentplan.embedding_models import BaseEmbeddingModelConnection, BaseEmbeddingModelSetup
from agentplan.environment import AgentsExecutionEnvironment
from agentplan.events import (
    ChatRequestEvent,
    ChatResponseEvent,
    Event,
    InputEvent,
    OutputEvent,
    OutputSchema,
    ToolRequestEvent,
    ToolResponseEvent,
)
from agentplan.exceptions import (
    ActionError,
    AgentPlanError,
    AgentRunError,
    ChatModelError,
    DurableCallError,
    MemoryValueError,
    PlanCompileError,
    ResourceError,
    ToolCallLimitExceeded,
    TransientError,
)
from agentplan.long_term_memory import LongTermMemory, LongTermMemoryOptions, MemorySet, MemorySetItem
from agentplan.memory import MemoryObject, MemoryRef, MemoryType
from agentplan.metric_group import MetricGroup
from agentplan.plan import AgentPlan
from agentplan.prompts import Prompt
from agentplan.react import ReActAgent
from agentplan.resource_names import ResourceName
from agentplan.resources import Resource, ResourceDescriptor, ResourceType
from agentplan.retrieval_events import ContextRetrievalRequestEvent, ContextRetrievalResponseEvent
from agentplan.runner_context import RunnerContext
from agentplan.runtime.engine import Engine, KeyDelta
from agentplan.runtime.local_execution_environment import LocalExecutionEnvironment
from agentplan.tools import FunctionTool, Tool
from agentplan.vector_stores import (
    BaseVectorStore,
    CollectionManageableVectorStore,
    Document,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)

if TYPE_CHECKING:
    from agentplan.integrations.openai import (
        OpenAIChatModelConnection,
        OpenAIChatModelSetup,
    )
    from agentplan.integrations.openai_embedding import (
        OpenAIEmbeddingModelConnection,
        OpenAIEmbeddingModelSetup,
    )
    from agentplan.skill import Skills, SkillSourceSpec

__version__ = "0.1.0"

# Loaded on first use, so that ``import agentplan`` pulls in neither ``openai`` nor its HTTP stack
# (an agent on another provider, the worker's CLI and plan tools need neither), nor the skills' bash parser.
_LAZY = {"OpenAIChatModelConnection": "agentplan.integrations.openai",
         "OpenAIChatModelSetup": "agentplan.integrations.openai",
         "OpenAIEmbeddingModelConnection": "agentplan.integrations.openai_embedding",
         "OpenAIEmbeddingModelSetup": "agentplan.integrations.openai_embedding",
         "Skills": "agentplan.skill", "SkillSourceSpec": "agentplan.skill"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agentplan' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ApprovalDecisionEvent", "ApprovalRequestEvent", "ApprovalTimeoutEvent",
    "AgentExecutionOptions", "ConfigOption", "MemoryRef", "MemoryType", "MetricGroup", "OutputSchema",
    "ResourceName", "ShortTermMemoryTtlUpdate", "ShortTermMemoryTtlVisibility", "Tool",
    "ActionError", "Agent", "AgentConfiguration", "AgentPlan", "AgentPlanError", "AgentRunError",
    "AgentsExecutionEnvironment", "BaseChatModelConnection", "BaseChatModelSetup", "ChatMessage",
    "ChatModelError", "ChatRequestEvent", "ChatResponseEvent", "ChatResult", "DurableCallError", "Engine",
    "ErrorHandlingStrategy", "Event", "FunctionTool", "InputEvent", "KeyDelta", "LocalExecutionEnvironment",
    "MemoryObject", "MemoryValueError", "MessageRole", "OpenAIChatModelConnection", "OpenAIChatModelSetup",
    "OutputEvent", "PlanCompileError", "Prompt", "ReActAgent", "Resource", "ResourceDescriptor",
    "ResourceError", "ResourceType", "RunnerContext", "ToolCall", "ToolCallLimitExceeded", "ToolRequestEvent",
    "ToolResponseEvent", "TransientError", "action", "chat_model_connection", "chat_model_setup", "prompt", "tool",
    "mcp_server", "skills", "Skills", "SkillSourceSpec",
    # Embeddings, vector stores and RAG, long-term memory
    "BaseEmbeddingModelConnection", "BaseEmbeddingModelSetup", "BaseVectorStore", "CollectionManageableVectorStore",
    "ContextRetrievalRequestEvent", "ContextRetrievalResponseEvent", "Document", "LongTermMemory",
    "LongTermMemoryOptions", "MemorySet", "MemorySetItem", "OpenAIEmbeddingModelConnection",
    "OpenAIEmbeddingModelSetup", "VectorStoreQuery", "VectorStoreQueryMode", "VectorStoreQueryResult",
    "embedding_model_connection", "embedding_model_setup", "vector_store",
]
