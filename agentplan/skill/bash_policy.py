"""Which shell commands the skills' ``bash`` tool may run: decided by parsing, never by pattern matching.

The command is parsed with ``bashlex`` (a port of GNU bash's own grammar) and every node is
inspected. Allowed: simple commands, pipelines (``|``) and lists (``;``, ``&&``, ``||``) of them,
words without expansions, and the redirections ``N>&M`` and ``> /dev/null``. A command word must be
a name in ``allowed_commands`` (found on PATH) or a path that, with ``..`` and symlinks resolved,
is a file inside one of ``allowed_script_dirs``. Everything else is refused: command and process
substitution, variables, ``~``, assignments (``FOO=1 cmd``), background jobs, subshells and groups,
functions, control flow, here-documents, file redirections, and any input the parser rejects.

What passes is run by :mod:`agentplan.skill.bash_runner` from the parsed words themselves (argv,
no shell), so what was checked is exactly what runs: no second parse, no expansion, no globbing.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bashlex
import bashlex.errors

from agentplan.exceptions import ResourceError

#: Commands that run other commands or a shell: allowing one would allow everything.
COMMAND_RUNNERS = frozenset({
    "bash", "sh", "dash", "zsh", "ksh", "mksh", "fish", "csh", "tcsh", "busybox", "env", "eval", "exec", "source",
    ".", "sudo", "su", "doas", "xargs", "nohup", "timeout", "nice", "ionice", "setsid", "stdbuf", "chroot",
    "time", "command", "builtin", "watch", "script", "strace", "ltrace", "unshare", "nsenter", "parallel",
    "runuser", "flock", "systemd-run",
})
_LIST_OPERATORS = frozenset({";", "&&", "||"})
MAX_COMMAND_CHARS = 10_000


def search_path() -> str:
    """PATH without relative entries ('.', ''), which would find programs in the working directory."""
    return os.pathsep.join(p for p in os.environ.get("PATH", os.defpath).split(os.pathsep) if os.path.isabs(p))


class CommandRefused(Exception):
    """The command is not provably allowed; the message says why (it is returned to the model)."""


@dataclass(frozen=True)
class SimpleCommand:
    argv: tuple[str, ...]
    stderr_to_stdout: bool = False
    stdout_to_stderr: bool = False
    stdout_devnull: bool = False
    stderr_devnull: bool = False


@dataclass(frozen=True)
class Pipeline:
    commands: tuple[SimpleCommand, ...]


@dataclass(frozen=True)
class CommandList:
    """Pipelines joined by operators: ``steps[0]``, then (operator, pipeline) pairs."""

    first: Pipeline
    rest: tuple[tuple[str, Pipeline], ...]


def check_allowed_commands(allowed_commands: list[str]) -> None:
    """Start-up check of a setup's ``allowed_commands``."""
    for name in allowed_commands:
        if not isinstance(name, str) or not name or "/" in name or name.strip() != name:
            raise ResourceError(f"allowed_commands: {name!r} must be a bare command name (no path, no spaces)")
        if name in COMMAND_RUNNERS:
            raise ResourceError(f"allowed_commands: {name!r} runs arbitrary commands and cannot be allowed")


class BashPolicy:
    """``allowed_commands`` (bare names) and ``allowed_script_dirs`` (directories) of one chat model setup."""

    def __init__(self, allowed_commands: list[str], allowed_script_dirs: list[str]) -> None:
        check_allowed_commands(allowed_commands)
        self.allowed_commands = frozenset(allowed_commands)
        self.script_dirs = tuple(Path(d).expanduser().resolve() for d in allowed_script_dirs)

    def parse(self, command: str, cwd: Path) -> CommandList:
        """The checked command, or :class:`CommandRefused`."""
        if not command.strip():
            raise CommandRefused("empty command")
        if len(command) > MAX_COMMAND_CHARS:
            raise CommandRefused(f"the command is longer than {MAX_COMMAND_CHARS} characters")
        if any(ord(c) < 32 and c not in "\t\n" for c in command) or "\x7f" in command:
            raise CommandRefused("control characters are not allowed")
        try:
            trees = bashlex.parse(command)
        except (bashlex.errors.ParsingError, NotImplementedError, IndexError, AttributeError, TypeError) as exc:
            raise CommandRefused(f"cannot parse the command ({type(exc).__name__}: {exc})") from None
        pipelines: list[tuple[str, Pipeline]] = []
        for tree in trees:  # newline-separated commands run one after the other, like ';'
            self._list(tree, cwd, pipelines, ";")
        return CommandList(first=pipelines[0][1], rest=tuple(pipelines[1:]))

    def is_inside_scripts(self, path: Path) -> bool:
        return any(path == d or path.is_relative_to(d) for d in self.script_dirs)

    # -- the walk ----------------------------------------------------------------------------------
    def _list(self, node: Any, cwd: Path, out: list[tuple[str, Pipeline]], operator: str) -> None:
        kind = node.kind
        if kind == "list":
            pending = operator
            for part in node.parts:
                if part.kind == "operator":
                    if part.op not in _LIST_OPERATORS:
                        raise CommandRefused(f"operator {part.op!r} is not allowed (no background jobs)")
                    pending = part.op
                else:
                    self._list(part, cwd, out, pending)
            return
        out.append((operator, self._pipeline(node, cwd)))

    def _pipeline(self, node: Any, cwd: Path) -> Pipeline:
        if node.kind == "command":
            return Pipeline((self._command(node, cwd),))
        if node.kind != "pipeline":
            raise CommandRefused(f"{_describe(node)} is not allowed; use simple commands, pipes, ';', '&&', '||'")
        commands = []
        for part in node.parts:
            if part.kind == "pipe":
                if part.pipe != "|":
                    raise CommandRefused(f"pipe {part.pipe!r} is not allowed; use '2>&1 |'")
                continue
            if part.kind != "command":
                raise CommandRefused(f"{_describe(part)} is not allowed inside a pipeline")
            commands.append(self._command(part, cwd))
        return Pipeline(tuple(commands))

    def _command(self, node: Any, cwd: Path) -> SimpleCommand:
        argv: list[str] = []
        flags = {"stderr_to_stdout": False, "stdout_to_stderr": False, "stdout_devnull": False,
                 "stderr_devnull": False}
        for part in node.parts:
            if part.kind == "word":
                argv.append(_literal(part))
            elif part.kind == "redirect":
                flags[_redirect(part)] = True
            elif part.kind == "assignment":
                raise CommandRefused(f"variable assignment {part.word!r} is not allowed")
            else:
                raise CommandRefused(f"{_describe(part)} is not allowed")
        if not argv:
            raise CommandRefused("a redirection without a command is not allowed")
        argv[0] = self._program(argv[0], cwd)
        return SimpleCommand(tuple(argv), **flags)

    def _program(self, word: str, cwd: Path) -> str:
        """The executable to run for command word ``word``, or a refusal."""
        if "/" not in word:
            if word not in self.allowed_commands:
                allowed = ", ".join(sorted(self.allowed_commands)) or "none"
                raise CommandRefused(f"command {word!r} is not allowed (allowed: {allowed})")
            found = shutil.which(word, path=search_path())
            if found is None:
                raise CommandRefused(f"command {word!r} is not installed")
            return found
        target = (cwd / word).resolve()  # '..' and symlinks resolved before the check
        if not self.is_inside_scripts(target):
            raise CommandRefused(f"{word!r} is outside the allowed script directories")
        if not target.is_file() or not os.access(target, os.X_OK):
            raise CommandRefused(f"{word!r} is not an executable file")
        return str(target)


def _literal(word: Any) -> str:
    """A word's text after quote removal, if it contains no expansion of any kind."""
    for part in getattr(word, "parts", None) or []:
        raise CommandRefused(f"{_describe(part)} in {word.word!r} is not allowed (no substitutions or variables)")
    text: str = word.word
    if "$" in text or "`" in text:  # never an unparsed expansion, however the parser read it
        raise CommandRefused(f"'$' and '`' are not allowed in {text!r}")
    return text


def _redirect(node: Any) -> str:
    kind = node.type
    fd = node.input
    if getattr(node, "heredoc", None) is not None:
        raise CommandRefused("here-documents are not allowed")
    if kind == ">&" and isinstance(node.output, int):
        if fd == 2 and node.output == 1:
            return "stderr_to_stdout"
        if fd in (None, 1) and node.output == 2:
            return "stdout_to_stderr"
    if kind in (">", ">>") and getattr(node.output, "kind", None) == "word" \
            and _literal(node.output) == "/dev/null":
        return "stderr_devnull" if fd == 2 else "stdout_devnull" if fd in (None, 1) else _refuse_redirect(node)
    return _refuse_redirect(node)


def _refuse_redirect(node: Any) -> str:
    raise CommandRefused(f"redirection {node.type!r} is not allowed (only 2>&1, >&2 and > /dev/null)")


def _describe(node: Any) -> str:
    if node.kind == "compound":
        inner = getattr(node, "list", None) or []
        opener = getattr(inner[0], "word", "") if inner else ""
        return {"(": "a subshell", "{": "a command group"}.get(opener, "control flow (if/for/while/case)")
    names = {"commandsubstitution": "command substitution", "processsubstitution": "process substitution",
             "parameter": "variable expansion", "tilde": "'~' expansion", "compound": "a subshell or group",
             "function": "a function definition", "if": "'if'", "for": "'for'", "while": "'while'",
             "until": "'until'", "reservedword": f"reserved word {getattr(node, 'word', '')!r}"}
    return names.get(node.kind, repr(node.kind))
