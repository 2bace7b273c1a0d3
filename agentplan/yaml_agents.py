"""Declarative agents in YAML, Flink Agents 0.3's format: ``env.load_yaml(path)``, then ``apply("name")``.

A file holds ``agents:`` plus resources and actions shared by all of them. Each agent lists prompts,
tools, chat model connections and setups (and the other resource kinds) and actions, whose functions
are named ``module:qualname``. ``listen_to`` takes upstream's event aliases (``input``, ``chat_response``,
...) or any event type string. A descriptor's ``clazz`` is an alias (``openai``; ours: ``vllm``,
``litellm``, ``llamacpp``, ``openai_compatible``), a ``ResourceName`` value or ``module:Class``; its
other keys are the resource's arguments. Every mistake is an error naming the file, line and field.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentplan import codec
from agentplan.agent import Agent
from agentplan.chat_message import ChatMessage, MessageRole
from agentplan.exceptions import AgentPlanError
from agentplan.prompts import Prompt
from agentplan.resource_names import ResourceName
from agentplan.resources import ResourceDescriptor, ResourceType

EVENT_ALIASES = {
    "input": "_input_event", "output": "_output_event", "chat_request": "_chat_request_event",
    "chat_response": "_chat_response_event", "tool_request": "_tool_request_event",
    "tool_response": "_tool_response_event", "context_retrieval_request": "_context_retrieval_request_event",
    "context_retrieval_response": "_context_retrieval_response_event",
}
_OPENAI_CONNECTION = "agentplan.integrations.openai:OpenAIChatModelConnection"
_OPENAI_SETUP = "agentplan.integrations.openai:OpenAIChatModelSetup"
_OPENAI_COMPATIBLE = ("openai", "openai_compatible", "vllm", "litellm", "llamacpp")
#: section -> alias -> class path (ours, or an upstream ResourceName value resolved like any other).
CLAZZ_ALIASES: dict[str, dict[str, str]] = {
    "chat_model_connections": {
        **dict.fromkeys(_OPENAI_COMPATIBLE, _OPENAI_CONNECTION),
        "ollama": ResourceName.ChatModel.OLLAMA_CONNECTION, "anthropic": ResourceName.ChatModel.ANTHROPIC_CONNECTION,
        "tongyi": ResourceName.ChatModel.TONGYI_CONNECTION,
        "azure_openai": ResourceName.ChatModel.AZURE_OPENAI_CONNECTION},
    "chat_model_setups": {
        **dict.fromkeys(_OPENAI_COMPATIBLE, _OPENAI_SETUP),
        "ollama": ResourceName.ChatModel.OLLAMA_SETUP, "anthropic": ResourceName.ChatModel.ANTHROPIC_SETUP,
        "tongyi": ResourceName.ChatModel.TONGYI_SETUP, "azure_openai": ResourceName.ChatModel.AZURE_OPENAI_SETUP},
    "embedding_model_connections": {
        "ollama": ResourceName.EmbeddingModel.OLLAMA_CONNECTION,
        "openai": ResourceName.EmbeddingModel.OPENAI_CONNECTION,
        "tongyi": ResourceName.EmbeddingModel.TONGYI_CONNECTION},
    "embedding_model_setups": {
        "ollama": ResourceName.EmbeddingModel.OLLAMA_SETUP, "openai": ResourceName.EmbeddingModel.OPENAI_SETUP,
        "tongyi": ResourceName.EmbeddingModel.TONGYI_SETUP},
    "vector_stores": {"chroma": ResourceName.VectorStore.CHROMA_VECTOR_STORE},
    "mcp_servers": {"mcp": "agentplan.integrations.mcp:MCPServer"},
}
DESCRIPTOR_SECTIONS: dict[str, ResourceType] = {
    "chat_model_connections": ResourceType.CHAT_MODEL_CONNECTION, "chat_model_setups": ResourceType.CHAT_MODEL,
    "embedding_model_connections": ResourceType.EMBEDDING_MODEL_CONNECTION,
    "embedding_model_setups": ResourceType.EMBEDDING_MODEL, "vector_stores": ResourceType.VECTOR_STORE,
    "mcp_servers": ResourceType.MCP_SERVER,
}


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MessageSpec(_Spec):
    role: MessageRole
    content: str


class PromptSpec(_Spec):
    name: str
    text: str | None = None
    messages: list[MessageSpec] | None = None


class ToolSpec(_Spec):
    name: str
    function: str
    type: Literal["python"] = "python"
    parameter_types: list[str] | None = None


class ActionSpec(_Spec):
    name: str
    function: str
    listen_to: list[str] = Field(min_length=1)
    config: dict[str, Any] | None = None
    type: Literal["python"] = "python"


class SkillsSpec(_Spec):
    name: str
    paths: list[str] | None = None
    urls: list[str] | None = None
    classpath: list[str] | None = None
    package: list[dict[str, str]] | None = None


class DescriptorSpec(BaseModel):
    """``name``, ``clazz`` and the resource's own arguments (any other key)."""

    model_config = ConfigDict(extra="allow")

    name: str
    clazz: str
    type: Literal["python"] = "python"


class _Resources(_Spec):
    prompts: list[PromptSpec] = Field(default_factory=list)
    tools: list[ToolSpec] = Field(default_factory=list)
    skills: list[SkillsSpec] = Field(default_factory=list)
    chat_model_connections: list[DescriptorSpec] = Field(default_factory=list)
    chat_model_setups: list[DescriptorSpec] = Field(default_factory=list)
    embedding_model_connections: list[DescriptorSpec] = Field(default_factory=list)
    embedding_model_setups: list[DescriptorSpec] = Field(default_factory=list)
    vector_stores: list[DescriptorSpec] = Field(default_factory=list)
    mcp_servers: list[DescriptorSpec] = Field(default_factory=list)


class AgentSpec(_Resources):
    name: str
    description: str | None = None
    actions: list[ActionSpec | str] = Field(default_factory=list)


class YamlAgentsDocument(_Resources):
    agents: list[AgentSpec] = Field(default_factory=list)
    actions: list[ActionSpec] = Field(default_factory=list)


# -- reading, with line numbers ----------------------------------------------------------------------
Loc = tuple[Any, ...]


def _lines(node: yaml.Node, loc: Loc, out: dict[Loc, int]) -> None:
    out[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                out[loc + (key.value,)] = key.start_mark.line + 1
                _lines(value, (*loc, key.value), out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _lines(item, (*loc, index), out)


def _line_of(loc: Iterable[Any], lines: dict[Loc, int]) -> int:
    """The line of the deepest part of ``loc`` present in the file (pydantic adds union branch names)."""
    path: Loc = ()
    best = lines.get((), 1)
    for part in loc:
        candidate = (*path, part)
        if candidate in lines:
            path = candidate
            best = lines[candidate]
    return best


def _field(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in ("ActionSpec", "str") and not str(part).startswith(("function-", "literal[")):
            out += f".{part}" if out else str(part)
    return out or "(document)"


class YamlAgentError(AgentPlanError):
    """A YAML agent file is invalid; the message names the file, line and field."""


def _read(path: Path) -> tuple[YamlAgentsDocument, dict[Loc, int]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise YamlAgentError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise YamlAgentError(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from exc
    lines: dict[Loc, int] = {}
    if node is not None:
        _lines(node, (), lines)
    if not isinstance(data, dict):
        raise YamlAgentError(f"{path}:1: expected a mapping with 'agents:' at the top level")
    try:
        return YamlAgentsDocument.model_validate(data), lines
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # For ``actions: [ActionSpec | str]`` pydantic reports both branches: the spec's says what is wrong.
        first = next((e for e in errors if "str" not in e["loc"]), errors[0])
        line = _line_of(first["loc"], lines)
        raise YamlAgentError(f"{path}:{line}: {_field(first['loc'])}: {first['msg']}") from None


# -- building agents -----------------------------------------------------------------------------------
class _Builder:
    def __init__(self, path: Path, lines: dict[Loc, int]) -> None:
        self.path = path
        self.lines = lines

    def fail(self, loc: Loc, message: str) -> YamlAgentError:
        return YamlAgentError(f"{self.path}:{_line_of(loc, self.lines)}: {_field(loc)}: {message}")

    def function(self, loc: Loc, target: str) -> Callable[..., Any]:
        if ":" not in target:
            raise self.fail(loc, f"{target!r} is not 'module:qualname'")
        try:
            func = codec.resolve_path(target)
        except AgentPlanError as exc:
            raise self.fail(loc, str(exc)) from None
        if not callable(func):
            raise self.fail(loc, f"{target!r} is not callable")
        return func

    def add_resources(self, agent: Agent, spec: _Resources, loc: Loc) -> None:
        try:
            for i, prompt in enumerate(spec.prompts):
                agent.add_resource(prompt.name, ResourceType.PROMPT, self.prompt(prompt, (*loc, "prompts", i)))
            for i, tool in enumerate(spec.tools):
                agent.add_resource(tool.name, ResourceType.TOOL, self.function((*loc, "tools", i, "function"),
                                                                              tool.function))
            for i, skills in enumerate(spec.skills):
                agent.add_resource(skills.name, ResourceType.SKILLS, self.skills(skills, (*loc, "skills", i)))
            for section, kind in DESCRIPTOR_SECTIONS.items():
                for i, descriptor in enumerate(getattr(spec, section)):
                    agent.add_resource(descriptor.name, kind, self.descriptor(section, descriptor, (*loc, section, i)))
        except YamlAgentError:
            raise
        except AgentPlanError as exc:  # duplicate names
            raise self.fail(loc, str(exc)) from None

    def prompt(self, spec: PromptSpec, loc: Loc) -> Prompt:
        if (spec.text is None) == (spec.messages is None):
            raise self.fail(loc, "a prompt has either 'text' or 'messages'")
        if spec.text is not None:
            return Prompt.from_text(spec.text)
        return Prompt.from_messages([ChatMessage(role=m.role, content=m.content) for m in spec.messages or []])

    def skills(self, spec: SkillsSpec, loc: Loc) -> Any:
        from agentplan.skill.sources import Skills, merge

        if spec.classpath:
            raise self.fail((*loc, "classpath"), "classpath skills are Java-only; use paths, urls or package")
        parts = [Skills.from_local_dir(*spec.paths or []), Skills.from_url(*spec.urls or []),
                 Skills.from_package(*[(p["package"], p["resource"]) for p in spec.package or []])]
        try:
            return merge(parts)
        except (ValueError, KeyError) as exc:
            raise self.fail(loc, str(exc)) from None

    def descriptor(self, section: str, spec: DescriptorSpec, loc: Loc) -> ResourceDescriptor:
        clazz = CLAZZ_ALIASES[section].get(spec.clazz, spec.clazz)
        try:
            return ResourceDescriptor(clazz=clazz, arguments=dict(spec.model_extra or {}))
        except AgentPlanError as exc:
            raise self.fail((*loc, "clazz"), str(exc)) from None

    def add_action(self, agent: Agent, spec: ActionSpec, loc: Loc) -> None:
        events = tuple(EVENT_ALIASES.get(name, name) for name in spec.listen_to)
        try:
            agent.add_action(spec.name, events, self.function((*loc, "function"), spec.function), **(spec.config or {}))
        except YamlAgentError:
            raise
        except AgentPlanError as exc:
            raise self.fail(loc, str(exc)) from None


def load_agents(path: str | Path) -> dict[str, Agent]:
    """The agents of one YAML file, by name."""
    file = Path(path)
    document, lines = _read(file)
    builder = _Builder(file, lines)
    shared = {action.name: (i, action) for i, action in enumerate(document.actions)}
    agents: dict[str, Agent] = {}
    for a, spec in enumerate(document.agents):
        loc: Loc = ("agents", a)
        if spec.name in agents:
            raise builder.fail((*loc, "name"), f"duplicate agent name {spec.name!r}")
        agent = Agent()
        builder.add_resources(agent, spec, loc)
        builder.add_resources(agent, document, ())
        for i, entry in enumerate(spec.actions):
            if isinstance(entry, str):
                if entry not in shared:
                    raise builder.fail((*loc, "actions", i), f"no shared action named {entry!r} "
                                                             f"(known: {sorted(shared)})")
                index, action = shared[entry]
                builder.add_action(agent, action, ("actions", index))
            else:
                builder.add_action(agent, entry, (*loc, "actions", i))
        agents[spec.name] = agent
    if not agents:
        raise YamlAgentError(f"{file}:1: agents: the file defines no agent")
    return agents
