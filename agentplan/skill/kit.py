"""What a chat model setup with ``skills=[...]`` gets: the ``load_skill`` and ``bash`` tools and a
system message listing its skills."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentplan.chat_message import ChatMessage, MessageRole
from agentplan.exceptions import ResourceError
from agentplan.skill.bash_policy import BashPolicy, CommandRefused
from agentplan.skill.bash_runner import run_command_list
from agentplan.skill.sources import SKILL_FILE, Skill
from agentplan.tools import Tool

LOAD_SKILL_TOOL = "load_skill"
BASH_TOOL = "bash"
#: Name of the plan resource that merges every ``@skills`` resource.
SKILLS_RESOURCE = "_skills_config"
#: Defaults of the bash tool: the model's timeout is capped, and so is what a call returns per stream.
DEFAULT_BASH_TIMEOUT_S = 60.0
DEFAULT_BASH_TIMEOUT_LIMIT_S = 300.0
DEFAULT_BASH_OUTPUT_LIMIT_BYTES = 16 * 1024
MAX_SKILL_FILE_BYTES = 256 * 1024


def _schema(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": required, "additionalProperties": False}}}


class SkillKit:
    """The skills side of one chat model setup (validated when the setup is built)."""

    def __init__(self, skills: list[str], discovery_prompt: str | None, allowed_commands: list[str],
                 allowed_script_dirs: list[str], timeout_limit_s: float = DEFAULT_BASH_TIMEOUT_LIMIT_S,
                 output_limit_bytes: int = DEFAULT_BASH_OUTPUT_LIMIT_BYTES) -> None:
        if not all(isinstance(s, str) for s in skills):
            raise ResourceError(f"skills must be a list of skill names, got {skills!r}")
        if timeout_limit_s <= 0 or output_limit_bytes <= 0:
            raise ResourceError("bash_timeout_limit_s and bash_output_limit_bytes must be > 0")
        self.skill_names = list(skills)
        self.discovery_prompt = discovery_prompt
        self.policy = BashPolicy(allowed_commands, allowed_script_dirs)
        self.timeout_limit_s = float(timeout_limit_s)
        self.output_limit_bytes = int(output_limit_bytes)
        self._lookup: Callable[[], dict[str, Skill]] | None = None
        self._tools: list[Tool] | None = None

    def bind(self, registry: Callable[[], dict[str, Skill]]) -> None:
        self._lookup = registry

    def skills(self) -> list[Skill]:
        if self._lookup is None:
            raise ResourceError("skills requested before the setup was bound to a plan")
        known = self._lookup()
        missing = [n for n in self.skill_names if n not in known]
        if missing:
            raise ResourceError(f"unknown skills {missing} (known: {sorted(known)})")
        return [known[n] for n in self.skill_names]

    def tools(self) -> list[Tool]:
        if self._tools is None:
            self._tools = [LoadSkillTool(self), BashTool(self)]
        return self._tools

    def tool(self, name: str) -> Tool | None:
        return next((t for t in self.tools() if t.name == name), None)

    def discovery_message(self) -> ChatMessage:
        if self.discovery_prompt is not None:
            return ChatMessage(role=MessageRole.SYSTEM, content=self.discovery_prompt)
        lines = [f"- {s.name}: {s.description}" for s in self.skills()]
        commands = ", ".join(sorted(self.policy.allowed_commands)) or "none"
        scripts = ", ".join(str(d) for d in self.policy.script_dirs) or "none"
        return ChatMessage(role=MessageRole.SYSTEM, content=(
            "You have skills: folders with instructions (and sometimes scripts) for particular tasks.\n"
            + "\n".join(lines) + "\n"
            f"When a task matches a skill, first call {LOAD_SKILL_TOOL} with the skill's name to read its "
            f"{SKILL_FILE}; it may point to more files of the skill, read them with {LOAD_SKILL_TOOL} and path. "
            f"Run the commands a skill asks for with the {BASH_TOOL} tool. Allowed commands: {commands}. "
            f"Scripts may run from: {scripts}. No variables, substitutions, subshells or file redirections."))

    def default_cwd(self) -> Path:
        return self.policy.script_dirs[0] if self.policy.script_dirs else Path(tempfile.gettempdir())

    def allowed_cwd(self, cwd: str) -> Path:
        path = Path(cwd).expanduser().resolve()
        skill_dirs = [s.directory for s in self.skills()]
        if not (self.policy.is_inside_scripts(path) or any(path == d or path.is_relative_to(d) for d in skill_dirs)):
            raise CommandRefused(f"cwd {cwd!r} is outside the skill and script directories")
        if not path.is_dir():
            raise CommandRefused(f"cwd {cwd!r} is not a directory")
        return path


class LoadSkillTool(Tool):
    """Returns a file of a skill (its SKILL.md by default)."""

    name = LOAD_SKILL_TOOL
    description = "Read a skill's instructions (SKILL.md) or another file inside the skill's folder."

    def __init__(self, kit: SkillKit) -> None:
        self.kit = kit

    def schema(self) -> dict[str, Any]:
        return _schema(self.name, self.description, {
            "name": {"type": "string", "description": "The skill's name."},
            "path": {"type": "string", "description": f"A file inside the skill, default {SKILL_FILE}.",
                     "default": SKILL_FILE}}, ["name"])

    async def call(self, arguments: dict[str, Any]) -> Any:
        name, path = arguments.get("name"), arguments.get("path", SKILL_FILE)
        if not isinstance(name, str) or not isinstance(path, str):
            raise ValueError("load_skill takes name (string) and path (string)")
        skill = next((s for s in self.kit.skills() if s.name == name), None)
        if skill is None:
            raise ValueError(f"no skill {name!r} (available: {[s.name for s in self.kit.skills()]})")
        target = (skill.directory / path).resolve()
        if not target.is_relative_to(skill.directory):
            raise ValueError(f"{path!r} is outside the skill {name!r}")
        if not target.is_file():
            raise ValueError(f"skill {name!r} has no file {path!r}")
        data = target.read_bytes()[:MAX_SKILL_FILE_BYTES]
        return data.decode("utf-8", errors="replace")


class BashTool(Tool):
    """Runs a command the setup's policy allows; a refusal is the result, and nothing runs."""

    name = BASH_TOOL
    description = ("Run a command line (simple commands, pipes, ';', '&&', '||'). Only allowed commands and "
                   "scripts in allowed directories run.")

    def __init__(self, kit: SkillKit) -> None:
        self.kit = kit

    def schema(self) -> dict[str, Any]:
        return _schema(self.name, self.description, {
            "command": {"type": "string", "description": "The command line."},
            "timeout": {"type": "integer", "description": "Seconds before the command is killed.",
                        "default": int(DEFAULT_BASH_TIMEOUT_S)},
            "cwd": {"type": "string", "description": "Working directory (a skill or script directory)."}},
            ["command"])

    async def call(self, arguments: dict[str, Any]) -> Any:
        command = arguments.get("command")
        timeout = arguments.get("timeout", DEFAULT_BASH_TIMEOUT_S)
        cwd_arg = arguments.get("cwd")
        if not isinstance(command, str) or not isinstance(timeout, (int, float)) or timeout <= 0 \
                or not (cwd_arg is None or isinstance(cwd_arg, str)):
            raise ValueError("bash takes command (string), timeout (seconds > 0) and cwd (string)")
        try:
            cwd = self.kit.allowed_cwd(cwd_arg) if cwd_arg else self.kit.default_cwd()
            checked = self.kit.policy.parse(command, cwd)
        except CommandRefused as exc:
            return {"refused": str(exc)}
        return await run_command_list(checked, cwd, min(float(timeout), self.kit.timeout_limit_s),
                                      self.kit.output_limit_bytes)
