"""Agent skills: directories with a SKILL.md, offered to a chat model with the ``load_skill`` and
``bash`` tools (see :mod:`agentplan.skill.kit` and :mod:`agentplan.skill.bash_policy`)."""

from agentplan.skill.kit import BASH_TOOL, LOAD_SKILL_TOOL, SKILLS_RESOURCE, SkillKit
from agentplan.skill.sources import Skill, Skills, SkillSourceSpec

__all__ = ["BASH_TOOL", "LOAD_SKILL_TOOL", "SKILLS_RESOURCE", "Skill", "SkillKit", "SkillSourceSpec", "Skills"]
