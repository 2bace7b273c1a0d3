"""Compile-time checks of embedding models, vector stores and long-term memory configuration.

A setup naming a connection that is not declared, or a store naming an embedding model that is not,
fails when the plan is compiled (start-up), not at the first retrieval.
"""

from __future__ import annotations

from typing import Any

from agentplan.config import AgentConfiguration
from agentplan.exceptions import PlanCompileError
from agentplan.long_term_memory import validate_config
from agentplan.resources import ResourceDescriptor, ResourceType

#: Kind of resource -> (argument naming another resource, the kind it must be).
_REFERENCES = {
    ResourceType.EMBEDDING_MODEL: ("connection", ResourceType.EMBEDDING_MODEL_CONNECTION),
    ResourceType.VECTOR_STORE: ("embedding_model", ResourceType.EMBEDDING_MODEL),
}


def validate_retrieval_resources(resources: dict[str, tuple[ResourceType, Any]], config: AgentConfiguration) -> None:
    for name, (kind, provider) in resources.items():
        if kind not in (*_REFERENCES, ResourceType.EMBEDDING_MODEL_CONNECTION):
            continue
        if not isinstance(provider, ResourceDescriptor):
            continue
        try:
            declared = provider.resource_type()
        except Exception as exc:
            raise PlanCompileError(f"{kind.value} {name!r}: {exc}") from exc
        if declared is not None and declared is not kind:
            raise PlanCompileError(f"{kind.value} {name!r} is built from a {declared.value} class")
        if kind in _REFERENCES:
            argument, target = _REFERENCES[kind]
            ref = provider.arguments.get(argument)
            if ref is None and kind is ResourceType.EMBEDDING_MODEL:
                raise PlanCompileError(f"embedding model setup {name!r} has no 'connection'")
            if isinstance(ref, str):
                entry = resources.get(ref)
                if entry is None or entry[0] is not target:
                    raise PlanCompileError(f"{kind.value} {name!r} names {argument} {ref!r}, which is not a "
                                           f"declared {target.value} resource")
    validate_config(config, resources)
