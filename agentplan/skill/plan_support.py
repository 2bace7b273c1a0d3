"""The plan's side of skills: every ``@skills`` resource merged into one, checked when the plan is built."""

from __future__ import annotations

from typing import Any

from agentplan.exceptions import PlanCompileError, ResourceError
from agentplan.resources import ResourceType
from agentplan.skill.kit import SKILLS_RESOURCE
from agentplan.skill.sources import Skills, merge


def merge_skills(resources: dict[str, tuple[ResourceType, Any]]) -> str:
    """Add the merged skills resource (read and checked now); returns its name."""
    declared = []
    for name, (kind, provider) in resources.items():
        if kind is ResourceType.SKILLS:
            if not isinstance(provider, Skills):
                raise PlanCompileError(f"skills {name!r} must be a Skills (Skills.from_local_dir(...)), "
                                       f"got {type(provider).__name__}")
            declared.append(provider)
    if SKILLS_RESOURCE in resources:
        raise PlanCompileError(f"resource name {SKILLS_RESOURCE!r} is reserved for the merged skills")
    merged = merge(declared)
    try:
        merged.load()
    except (ResourceError, OSError) as exc:
        raise PlanCompileError(f"skills: {exc}") from exc
    resources[SKILLS_RESOURCE] = (ResourceType.SKILLS, merged)
    return SKILLS_RESOURCE


def check_setup_skills(setup: str, names: Any, resources: dict[str, tuple[ResourceType, Any]]) -> None:
    entry = resources.get(SKILLS_RESOURCE)
    known = entry[1].load() if entry is not None else {}
    if not isinstance(names, list):
        raise PlanCompileError(f"chat model setup {setup!r}: skills must be a list of skill names")
    missing = [n for n in names if n not in known]
    if missing:
        raise PlanCompileError(f"chat model setup {setup!r} names skills {missing}, which no @skills resource "
                               f"provides (known: {sorted(known)})")
