"""Chat models: a connection (transport, auth) and a setup (model, prompt, tools, parameters).

Connections classify failures: :class:`TransientError` for what retrying can fix (timeouts,
429, 5xx, refused connections) and :class:`ChatModelError` for what it cannot.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from agentplan.chat_message import ChatMessage, MessageRole
from agentplan.exceptions import ResourceError
from agentplan.limits import EndpointLimiter
from agentplan.prompts import Prompt
from agentplan.resources import Resource, ResourceType
from agentplan.tools import Tool

if TYPE_CHECKING:
    from agentplan.skill.kit import SkillKit

_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


class ChatResult(BaseModel):
    """A model answer plus token usage (recorded in the journal as the durable result)."""

    message: ChatMessage
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    fallback: str = ""  # the fallback setup that answered (agentplan.fallback); empty: the requested one
    finish_reason: str = ""  # as the server reported it (stop, length, tool_calls...); "" when unknown


class BaseChatModelConnection(Resource):
    """Transport to a model server."""

    resource_type = ResourceType.CHAT_MODEL_CONNECTION
    #: Takes the limiter arguments of agentplan.limits (checked when the plan compiles).
    accepts_limits: ClassVar[bool] = False

    @abstractmethod
    async def chat(self, messages: list[ChatMessage], *, model: str, tools: list[dict[str, Any]] | None = None,
                   **params: Any) -> ChatResult:
        """One model call. Raise TransientError or ChatModelError on failure."""

    def is_down(self) -> bool:
        """Whether the endpoint is known to fail (agentplan.endpoints); a fallback is then preferred."""
        return False

    def limiter(self) -> EndpointLimiter | None:
        """The endpoint's limiter, when the connection configures one (agentplan.limits)."""
        return None


class BaseChatModelSetup(Resource):
    """Which model, with which prompt, tools and generation parameters, over which connection."""

    resource_type = ResourceType.CHAT_MODEL
    # (reference, resolver, resolved): the connection looked up once per reference and plan, not per call
    _connection_found: tuple[object, object, BaseChatModelConnection] | None = None

    def __init__(self, connection: str | BaseChatModelConnection, model: str | None = None,
                 prompt: str | Prompt | None = None, tools: list[str] | None = None,
                 extract_reasoning: bool = False, fallback: list[str] | None = None,
                 skills: list[str] | None = None, skill_discovery_prompt: str | None = None,
                 allowed_commands: list[str] | None = None, allowed_script_dirs: list[str] | None = None,
                 **params: Any) -> None:
        if fallback is not None and (not isinstance(fallback, list)
                                     or not all(isinstance(n, str) and n for n in fallback)):
            raise ResourceError(f"fallback must be a list of chat model setup names, got {fallback!r}")
        self.skill_kit: SkillKit | None = None
        if skills:  # adds the load_skill and bash tools and a skill-discovery system message
            from agentplan.skill.kit import SkillKit

            self.skill_kit = SkillKit(skills, skill_discovery_prompt, list(allowed_commands or []),
                                      list(allowed_script_dirs or []), **{
                                          k: params.pop(k) for k in ("bash_timeout_limit_s", "bash_output_limit_bytes")
                                          if k in params})
        self.connection_ref = connection
        self.fallback = list(fallback or [])  # setups to use while this one's endpoint is down or over its limit
        self.model = model
        self.prompt_ref = prompt
        self.tool_names = list(tools or [])
        self.extract_reasoning = extract_reasoning
        self.params = {k: v for k, v in params.items() if v is not None}

    # -- lookups (lazy so a setup can be declared before its connection) ---------------------------
    @property
    def connection(self) -> BaseChatModelConnection:
        ref = self.connection_ref
        found = self._connection_found
        if found is not None and found[0] is ref and found[1] is self._resolver:
            return found[2]
        conn = self.get_resource(ref, ResourceType.CHAT_MODEL_CONNECTION) if isinstance(ref, str) else ref
        if not isinstance(conn, BaseChatModelConnection):
            raise ResourceError(f"connection {ref!r} is a {type(conn).__name__}, not a chat model connection")
        self._connection_found = (ref, self._resolver, conn)
        return conn

    @property
    def prompt(self) -> Prompt | None:
        ref = self.prompt_ref
        return self.get_resource(ref, ResourceType.PROMPT) if isinstance(ref, str) else ref

    def tools(self) -> list[Tool]:
        own = self.skill_kit.tools() if self.skill_kit is not None else []
        return [self.get_resource(name, ResourceType.TOOL) for name in self.tool_names] + own

    def bind(self, resolver: Any) -> None:
        super().bind(resolver)
        if self.skill_kit is not None:
            from agentplan.skill.kit import SKILLS_RESOURCE

            self.skill_kit.bind(lambda: self.get_resource(SKILLS_RESOURCE, ResourceType.SKILLS).load())

    # -- request building ----------------------------------------------------------------------
    def prepare_messages(self, messages: list[ChatMessage],
                         prompt_args: dict[str, Any] | None = None) -> list[ChatMessage]:
        """Prompt messages formatted with the request's ``prompt_args`` and messages' ``extra_args``
        (which win), then request messages that carry content of their own (or tool calls) and
        assistant messages, as Flink Agents appends them. A text prompt is a system message."""
        prompt = self.prompt
        if prompt is None:
            return list(messages)
        variables: dict[str, Any] = dict(prompt_args or {})
        for message in messages:
            variables.update(message.extra_args)
        formatted = prompt.format_messages(**variables)
        return formatted + [m for m in messages if m.content or m.tool_calls or m.role is MessageRole.ASSISTANT]

    def postprocess(self, result: ChatResult) -> ChatResult:
        if self.extract_reasoning and "<think>" in result.message.content:  # a substring test spares the regex
            reasoning = " ".join(m.strip() for m in _THINK.findall(result.message.content))
            if reasoning:
                content = _THINK.sub("", result.message.content).strip()
                message = result.message.model_copy(
                    update={"content": content, "extra_args": {**result.message.extra_args, "reasoning": reasoning}})
                return result.model_copy(update={"message": message})
        return result

    async def chat(self, messages: list[ChatMessage]) -> ChatResult:
        # No local for the tool list: it would live (a GC-tracked container) until the model answers.
        schemas = self.tool_schemas(self.tools()) or None
        if self.skill_kit is not None:  # after the first system message, as Flink Agents places it
            at = next((i + 1 for i, m in enumerate(messages) if m.role is MessageRole.SYSTEM), 0)
            messages = [*messages[:at], self.skill_kit.discovery_message(), *messages[at:]]
        result = await self.connection.chat(messages, model=self.model or "", tools=schemas, **self.params)
        return self.postprocess(result)

    def tool_schemas(self, tools: list[Tool]) -> list[dict[str, Any]]:
        """The tools as the connection sends them (a provider's setup may adjust them)."""
        return [t.schema() for t in tools]


def schema_instruction(schema: type[BaseModel] | dict[str, Any]) -> ChatMessage:
    """A system message asking for JSON matching ``schema``."""
    import json

    as_json = schema.model_json_schema() if isinstance(schema, type) else schema
    return ChatMessage(role=MessageRole.SYSTEM,
                       content="Reply with only a JSON object (no prose, no code fences) that matches this "
                               f"JSON schema:\n{json.dumps(as_json)}")

