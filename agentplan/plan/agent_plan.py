"""AgentPlan: an agent compiled into actions-by-event-type, resource providers and config.

The plan is what the engine executes. It validates the agent once (duplicate names, dangling
resource references) and round-trips through JSON so a deployment can show exactly what runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from agentplan import codec
from agentplan.agent import ActionSpec, Agent
from agentplan.config import AgentConfiguration
from agentplan.events import Event
from agentplan.exceptions import PlanCompileError, ResourceError, SerializationError
from agentplan.limits import LimitSettings
from agentplan.prompts import Prompt
from agentplan.resources import ResourceDescriptor, ResourceType
from agentplan.tools import FunctionTool, Tool

SECRET_NAME = re.compile(r"(api[_-]?key|password|secret|token|credential|authorization)",
                         re.IGNORECASE)
REDACTED = "***"
# user:password@ in a URL (e.g. a proxy or base URL with credentials)
URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


def _builtin_actions() -> list[ActionSpec]:
    from agentplan.plan.actions import BUILTIN_ACTIONS

    return list(BUILTIN_ACTIONS)


class AgentPlan:
    """Compiled agent. Build with :meth:`from_agent`."""

    def __init__(self, actions: dict[str, ActionSpec], resources: dict[str, tuple[ResourceType, Any]],
                 config: AgentConfiguration) -> None:
        self.actions = actions
        self.resource_providers = dict(resources)
        self.config = config
        self._by_event: dict[type, list[ActionSpec]] = {}
        self._by_typed: dict[tuple[type, str], list[ActionSpec]] = {}
        self._built: dict[str, Any] = {}
        self._discovered: set[str] = set()  # resources an MCP server offers: asked again when loaded
        if any(kind is ResourceType.MCP_SERVER for kind, _ in resources.values()):
            from agentplan.integrations.mcp import expand_mcp_servers

            self._discovered = expand_mcp_servers(self.resource_providers, self._built)
        if any(kind is ResourceType.SKILLS for kind, _ in resources.values()):
            from agentplan.skill.plan_support import merge_skills

            self._discovered.add(merge_skills(self.resource_providers))
        self._validate()

    # -- compile --------------------------------------------------------------------------
    @classmethod
    def from_agent(cls, agent: Agent, config: AgentConfiguration | None = None,
                   resources: dict[str, tuple[ResourceType, Any]] | None = None) -> AgentPlan:
        actions = agent.actions()
        for builtin in _builtin_actions():
            if builtin.name in actions:
                raise PlanCompileError(f"action name {builtin.name!r} is reserved for a built-in action")
            actions[builtin.name] = builtin
        merged = dict(agent.resources())
        for name, entry in (resources or {}).items():
            if name in merged:
                raise PlanCompileError(f"duplicate resource name {name!r} (declared by the agent and the environment)")
            merged[name] = entry
        return cls(actions, merged, config or AgentConfiguration())

    def _validate(self) -> None:
        for name, (kind, provider) in self.resource_providers.items():
            if kind is ResourceType.PROMPT and not isinstance(provider, Prompt):
                raise PlanCompileError(f"prompt {name!r} must be a Prompt, got {type(provider).__name__}")
            if kind is ResourceType.TOOL and not (callable(provider) or isinstance(provider, Tool)):
                raise PlanCompileError(f"tool {name!r} must be a function")
            model_kinds = (ResourceType.CHAT_MODEL, ResourceType.CHAT_MODEL_CONNECTION)
            if kind in model_kinds and isinstance(provider, ResourceDescriptor):
                try:
                    declared = provider.resource_type()
                except Exception as exc:
                    raise PlanCompileError(f"{kind.value} {name!r}: {exc}") from exc
                if declared is not None and declared is not kind:
                    raise PlanCompileError(f"{kind.value} {name!r} is built from a {declared.value} class")
            if kind is ResourceType.CHAT_MODEL and isinstance(provider, ResourceDescriptor):
                self._validate_setup(name, provider.arguments)
            if (kind is ResourceType.CHAT_MODEL_CONNECTION and isinstance(provider, ResourceDescriptor)
                    and getattr(provider.clazz, "accepts_limits", False)):
                try:  # limits are checked at compile time: a bad one fails the worker's start
                    LimitSettings.from_arguments(f"chat model connection {name!r}", provider.arguments)
                except ResourceError as exc:
                    raise PlanCompileError(str(exc)) from None
        from agentplan.plan.retrieval_validation import validate_retrieval_resources

        validate_retrieval_resources(self.resource_providers, self.config)

    def _validate_setup(self, name: str, args: dict[str, Any]) -> None:
        def require(ref: Any, kind: ResourceType, what: str) -> None:
            entry = self.resource_providers.get(ref)
            if entry is None or entry[0] is not kind:
                raise PlanCompileError(f"chat model setup {name!r} names {what} {ref!r}, which is not a "
                                       f"declared {kind.value} resource")

        connection = args.get("connection")
        if connection is None:
            raise PlanCompileError(f"chat model setup {name!r} has no 'connection'")
        if isinstance(connection, str):
            require(connection, ResourceType.CHAT_MODEL_CONNECTION, "connection")
        prompt = args.get("prompt")
        if isinstance(prompt, str):
            require(prompt, ResourceType.PROMPT, "prompt")
        for tool_name in args.get("tools") or []:
            if isinstance(tool_name, str):
                require(tool_name, ResourceType.TOOL, "tool")
        fallback = args.get("fallback")
        if fallback is not None and not (isinstance(fallback, list) and all(isinstance(f, str) for f in fallback)):
            raise PlanCompileError(f"chat model setup {name!r}: fallback must be a list of setup names, "
                                   f"got {fallback!r}")
        for fallback_name in fallback or []:
            if fallback_name == name:
                raise PlanCompileError(f"chat model setup {name!r} names itself as a fallback")
            require(fallback_name, ResourceType.CHAT_MODEL, "fallback")
        if args.get("skills"):
            from agentplan.skill.plan_support import check_setup_skills

            check_setup_skills(name, args["skills"], self.resource_providers)

    # -- execution-time lookups -------------------------------------------------------------------
    def actions_for(self, event_type: type) -> list[ActionSpec]:
        """Actions triggered by events of class ``event_type`` that carry no ``type`` of their own."""
        found = self._by_event.get(event_type)
        if found is None:
            found = self._by_event[event_type] = self._subscribed(event_type, getattr(event_type, "EVENT_TYPE", ""))
        return found

    def actions_for_event(self, event: Event) -> list[ActionSpec]:
        """Actions triggered by ``event``, in declaration order: those subscribed to its class (or a base
        class of it) and those subscribed to its type string. One dict lookup per event once cached."""
        type_name = event.type
        if type_name is None:
            found = self._by_event.get(type(event))
            return found if found is not None else self.actions_for(type(event))
        key = (type(event), type_name)
        found = self._by_typed.get(key)
        if found is None:
            found = self._by_typed[key] = self._subscribed(type(event), type_name)
        return found

    def _subscribed(self, event_class: type, type_name: str) -> list[ActionSpec]:
        mro = [t for t in event_class.__mro__ if isinstance(t, type) and issubclass(t, Event)]
        return [a for a in self.actions.values()
                if any(s == type_name if isinstance(s, str) else s in mro for s in a.events)]

    def get_resource(self, name: str, kind: ResourceType) -> Any:
        """The built resource (cached; descriptors are constructed at first use)."""
        entry = self.resource_providers.get(name)
        if entry is None or entry[0] is not kind:  # checked before the cache: the kind must match too
            known = sorted(n for n, (k, _) in self.resource_providers.items() if k is kind)
            raise ResourceError(f"no {kind.value} resource named {name!r} (known: {known})")
        built = self._built.get(name)
        if built is not None:
            return built
        provider = entry[1]
        if isinstance(provider, ResourceDescriptor):
            built = provider.build(self.get_resource)
        elif kind is ResourceType.TOOL and not isinstance(provider, Tool):
            built = FunctionTool(provider, name=name)
        else:
            built = provider
            bind = getattr(built, "bind", None)
            if callable(bind) and kind not in (ResourceType.PROMPT, ResourceType.TOOL):
                bind(self.get_resource)
        self._built[name] = built
        return built

    async def aclose(self) -> None:
        """Release what built resources hold on the running event loop (e.g. HTTP clients)."""
        for resource in list(self._built.values()):
            close = getattr(resource, "aclose", None)
            if callable(close):
                await close()
            elif getattr(resource, "resource_type", None) is ResourceType.VECTOR_STORE:
                resource.close()  # embedded stores lock their files; reopened at next use

    # -- JSON ---------------------------------------------------------------------------------------
    def to_dict(self, redact_secrets: bool = False) -> dict[str, Any]:
        def func_path(func: Callable[..., Any], what: str) -> str:
            path = codec.import_path(func)
            if "<locals>" in path or "<lambda>" in path:
                raise SerializationError(f"{what} {path} is not importable by path; define it at module level")
            return path

        resources = []
        for name, (kind, provider) in self.resource_providers.items():
            if name in self._discovered:
                continue
            entry: dict[str, Any] = {"name": name, "type": kind.value}
            if isinstance(provider, ResourceDescriptor):
                data = provider.to_dict()
                if redact_secrets:
                    data["arguments"] = _redact(data["arguments"])
                entry["descriptor"] = data
            elif isinstance(provider, Prompt):
                entry["prompt"] = provider.model_dump(mode="json", exclude_none=True)
            elif kind is ResourceType.SKILLS and hasattr(provider, "sources"):
                entry["skills"] = provider.model_dump(mode="json")
            elif kind is ResourceType.TOOL:
                func = provider.func if isinstance(provider, FunctionTool) else provider
                entry["function"] = func_path(func, f"tool {name!r}")
            else:
                raise SerializationError(f"resource {name!r} is an instance; declare it with a ResourceDescriptor "
                                         "to make the plan serializable")
            resources.append(entry)
        return {
            "actions": [
                {"name": a.name, "events": [_event_selector_json(e) for e in a.events],
                 "function": func_path(a.func, f"action {a.name!r}"), "config": codec.encode(a.config)}
                for a in self.actions.values()
            ],
            "resources": resources,
            "config": self.config.model_dump(mode="json"),
        }

    def model_dump_json(self, indent: int | None = None, redact_secrets: bool = False) -> str:
        return json.dumps(self.to_dict(redact_secrets=redact_secrets), indent=indent, ensure_ascii=False)

    @classmethod
    def model_validate_json(cls, text: str | bytes) -> AgentPlan:
        data = json.loads(text)
        actions = {}
        for a in data["actions"]:
            events = tuple(e["event_type"] if isinstance(e, dict) else codec.resolve_path(e) for e in a["events"])
            actions[a["name"]] = ActionSpec(a["name"], events, codec.resolve_path(a["function"]),
                                            codec.decode(a["config"]))
        resources: dict[str, tuple[ResourceType, Any]] = {}
        for r in data["resources"]:
            kind = ResourceType(r["type"])
            if "descriptor" in r:
                provider: Any = ResourceDescriptor.from_dict(r["descriptor"])
            elif "prompt" in r:
                provider = Prompt.model_validate(r["prompt"])
            elif "skills" in r:
                from agentplan.skill.sources import Skills

                provider = Skills.model_validate(r["skills"])
            else:
                provider = codec.resolve_path(r["function"])
            resources[r["name"]] = (kind, provider)
        return cls(actions, resources, AgentConfiguration.model_validate(data["config"]))


def _event_selector_json(selector: type | str) -> Any:
    """A class as its import path (as before type strings existed), a type string tagged as one."""
    return {"event_type": selector} if isinstance(selector, str) else codec.import_path(selector)


def _redact(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, key) for v in value]
    if key and SECRET_NAME.search(key) and value is not None:
        return REDACTED
    if isinstance(value, str) and "://" in value:
        return URL_CREDENTIALS.sub(REDACTED + "@", value)
    return value
