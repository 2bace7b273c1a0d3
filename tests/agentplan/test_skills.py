"""Skills: the bash policy against allowed and hostile commands, the argv runner, skill sources, and a
skills agent on the local environment against the LLM stub over HTTP."""

from __future__ import annotations

import asyncio
import http.server
import io
import json
import os
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentplan import (
    AgentPlan,
    AgentsExecutionEnvironment,
    OpenAIChatModelSetup,
    PlanCompileError,
    ResourceDescriptor,
    ResourceError,
)
from agentplan.skill import Skills
from agentplan.skill.bash_policy import BashPolicy, CommandRefused
from agentplan.skill.bash_runner import run_command_list
from agentplan.skill.kit import SkillKit
from agentplan.testing.llm_stub import StubLLMServer
from examples.skills_agent.skills_agent import CALCULATOR_DIR, SKILLS_DIR, SkillsAgent

SCRIPTS = CALCULATOR_DIR / "scripts"


@pytest.fixture()
def policy() -> BashPolicy:
    return BashPolicy(["echo", "expr", "tr", "wc", "false", "cat", "sleep", "printenv", "head"], [str(SCRIPTS)])


ALLOWED = [
    ("echo hi", "hi\n"),
    ('echo "a b" | tr a-z A-Z', "A B\n"),
    ("expr 6 '*' 7 && echo ok", "42\nok\n"),
    ("echo a; echo b", "a\nb\n"),
    ("echo a\necho b", "a\nb\n"),
    ("false || echo fallback", "fallback\n"),
    ("false && echo never", ""),
    ("echo x 2>&1 | wc -c", "2\n"),
    ("echo x > /dev/null", ""),
    ("./scripts/sum.sh 1 2 3", "6\n"),
    (f"{SCRIPTS}/sum.sh 4 5", "9\n"),
    ("echo '*' {a,b}", "* {a,b}\n"),  # no globbing, no brace expansion
]

HOSTILE = [
    "echo hi; rm -rf /",
    "rm -rf /",
    "echo $(curl http://127.0.0.1:9/x)",
    "echo `id`",
    'echo "$(id)"',
    'bash -c "id"',
    "sh -c id",
    "./scripts/../../../../../../bin/rm -rf /",
    "../math-calculator/scripts/../SKILL.md",
    "/bin/rm x",
    "FOO=1 echo a",
    "LD_PRELOAD=/tmp/evil.so echo a",
    "echo $HOME",
    "echo ${PATH}",
    "echo $'\\x41'",
    "echo ~/x",
    "echo a &",
    "echo <(cat /etc/passwd)",
    "(rm -rf /)",
    "{ rm x; }",
    "echo x > /etc/passwd",
    "echo x >> log.txt",
    "cat < /etc/shadow",
    "cat <<EOF\nx\nEOF",
    "echo a |& cat",
    "if true; then rm x; fi",
    "for f in a; do rm $f; done",
    "f() { rm x; }; f",
    "echo 'unterminated",
    "eval 'rm x'",
    "exec rm x",
    "env rm x",
    "echo a\x00b",
    "echo hi | sh",
    "",
]


@pytest.mark.parametrize(("command", "stdout"), ALLOWED)
def test_allowed_commands_run(policy: BashPolicy, command: str, stdout: str) -> None:
    checked = policy.parse(command, CALCULATOR_DIR)
    result = asyncio.run(run_command_list(checked, CALCULATOR_DIR, 10, 4096))
    assert result["stdout"] == stdout, result


@pytest.mark.parametrize("command", HOSTILE)
def test_hostile_commands_are_refused(policy: BashPolicy, command: str) -> None:
    with pytest.raises(CommandRefused):
        policy.parse(command, CALCULATOR_DIR)


def test_a_symlink_out_of_a_script_dir_is_refused(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "rm").symlink_to("/bin/rm")
    with pytest.raises(CommandRefused, match="outside the allowed script directories"):
        BashPolicy([], [str(scripts)]).parse("./scripts/rm -rf /", tmp_path)


def test_programs_are_found_on_absolute_path_entries_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "echo"
    fake.write_text("#!/bin/sh\necho pwned\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", "." + os.pathsep + os.environ["PATH"])
    monkeypatch.chdir(tmp_path)  # '.' on PATH now finds the fake echo first
    checked = BashPolicy(["echo"], []).parse("echo hi", tmp_path)
    assert checked.first.commands[0].argv[0] not in ("./echo", str(fake))
    assert asyncio.run(run_command_list(checked, tmp_path, 10, 4096))["stdout"] == "hi\n"
    with pytest.raises(CommandRefused, match="longer than"):
        BashPolicy(["echo"], []).parse("echo " + "a" * 10_000, tmp_path)


def test_command_runners_cannot_be_allowed() -> None:
    for runner in ("bash", "sh", "env", "xargs", "sudo"):
        with pytest.raises(ResourceError, match=f"{runner!r} runs arbitrary commands"):
            BashPolicy([runner], [])
    with pytest.raises(ResourceError, match="bare command name"):
        OpenAIChatModelSetup(connection="llm", skills=["math-calculator"], allowed_commands=["/bin/echo"])


def test_runner_caps_output_kills_on_timeout_and_hides_the_environment(policy: BashPolicy,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    env_result = asyncio.run(run_command_list(policy.parse("printenv", CALCULATOR_DIR), CALCULATOR_DIR, 10, 4096))
    assert "sk-secret" not in env_result["stdout"] and "PATH=" in env_result["stdout"]
    capped = asyncio.run(run_command_list(policy.parse("head -c 100000 /dev/zero", CALCULATOR_DIR),
                                          CALCULATOR_DIR, 10, 1000))
    assert capped["stdout"].startswith("\x00" * 1000) and "99000 more bytes dropped" in capped["stdout"]
    slow = asyncio.run(run_command_list(policy.parse("echo started; sleep 30", CALCULATOR_DIR),
                                        CALCULATOR_DIR, 0.5, 4096))
    assert slow["timed_out"] and slow["exit_code"] is None and slow["stdout"] == "started\n"
    failing = asyncio.run(run_command_list(policy.parse("expr 1 / 0", CALCULATOR_DIR), CALCULATOR_DIR, 10, 4096))
    assert failing["exit_code"] == 2 and "division by zero" in failing["stderr"]


# -- skill sources -----------------------------------------------------------------------------------

def write_skill(root: Path, name: str, front: str | None = None) -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    (directory / "SKILL.md").write_text(front if front is not None else
                                        f"---\nname: {name}\ndescription: Does {name}.\n---\nBody of {name}.\n")
    return directory


def test_sources_local_package_and_errors(tmp_path: Path) -> None:
    assert list(Skills.from_local_dir(SKILLS_DIR).load()) == ["math-calculator"]
    assert list(Skills.from_local_dir(CALCULATOR_DIR).load()) == ["math-calculator"]
    packaged = Skills.from_package(("examples.skills_agent", "skills")).load()
    assert packaged["math-calculator"].metadata == {"license": "Apache-2.0"}
    write_skill(tmp_path / "a", "twin")
    write_skill(tmp_path / "b", "twin")
    with pytest.raises(ResourceError, match="'twin' is defined twice"):
        Skills.from_local_dir(tmp_path / "a", tmp_path / "b").load()
    write_skill(tmp_path / "c", "bad", "---\nname: Bad Name\ndescription: x\n---\n")
    with pytest.raises(ResourceError, match=r"c/bad/SKILL.md: 'name' must be"):
        Skills.from_local_dir(tmp_path / "c").load()
    write_skill(tmp_path / "d", "nodesc", "---\nname: nodesc\n---\n")
    with pytest.raises(ResourceError, match="'description' is missing"):
        Skills.from_local_dir(tmp_path / "d").load()


@pytest.fixture()
def zip_server(tmp_path: Path) -> Iterator[str]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("zipped-skill/SKILL.md", "---\nname: zipped-skill\ndescription: From a zip.\n---\nHi.\n")
    body = buffer.getvalue()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/skills.zip"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_from_url_downloads_a_zip_once(zip_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTPLAN_SKILLS_CACHE", str(tmp_path / "cache"))
    skill = Skills.from_url(zip_server).load()["zipped-skill"]
    assert skill.description == "From a zip." and skill.directory.is_relative_to(tmp_path / "cache")


# -- the plan and the agent ------------------------------------------------------------------------

def test_plan_checks_skill_names_and_round_trips() -> None:
    plan = AgentPlan.from_agent(SkillsAgent())
    data = json.loads(plan.model_dump_json())
    assert {r["name"] for r in data["resources"]} == {"math_skills", "llm", "math_model"}
    AgentPlan.model_validate_json(plan.model_dump_json())
    agent = SkillsAgent()
    agent.add_resource("other_model", ResourceDescriptor(clazz=OpenAIChatModelSetup, connection="llm",
                                                         skills=["no-such-skill"]))
    with pytest.raises(PlanCompileError, match=r"names skills \['no-such-skill'\]"):
        AgentPlan.from_agent(agent)


@pytest.fixture()
def llm(monkeypatch: pytest.MonkeyPatch) -> Iterator[StubLLMServer]:
    with StubLLMServer() as stub:
        monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        yield stub


def run_agent(questions: list[str]) -> list[dict[str, Any]]:
    env = AgentsExecutionEnvironment.get_execution_environment()
    inputs = [{"key": f"q{i}", "value": {"id": f"q{i}", "question": q}} for i, q in enumerate(questions)]
    outputs = env.from_list(inputs).apply(SkillsAgent()).to_list()
    env.execute()
    return [json.loads(next(iter(o.values()))["answer"]) for o in outputs]


def test_skills_agent_loads_the_skill_and_runs_its_commands(llm: StubLLMServer) -> None:
    [answer] = run_agent(['6 times 7? [[tool:load_skill {"name": "math-calculator"}]] '
                          """[[tool:bash {"command": "expr 6 '*' 7"}]]"""])
    assert answer == {"exit_code": 0, "stdout": "42\n", "stderr": ""}
    first, second = llm.requests[0], llm.requests[1]
    assert {t["function"]["name"] for t in first["tools"]} == {"load_skill", "bash"}
    system = [m["content"] for m in first["messages"] if m["role"] == "system"]
    assert system[0] == "You answer arithmetic questions exactly."
    assert "- math-calculator: Exact integer arithmetic" in system[1] and "Allowed commands: expr" in system[1]
    skill_text = next(m["content"] for m in second["messages"] if m["role"] == "tool")
    assert skill_text.startswith("---\nname: math-calculator")


def test_hostile_command_from_the_model_is_refused_and_never_runs(llm: StubLLMServer, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    [answer] = run_agent([f'[[tool:bash {{"command": "expr 1 + 1; touch {marker}"}}]]'])
    assert answer == {"refused": "command 'touch' is not allowed (allowed: expr)"}
    assert not marker.exists()
    [escape] = run_agent(['[[tool:load_skill {"name": "math-calculator", "path": "../../skills_agent.py"}]]'])
    assert "outside the skill" in escape["result"]


def test_skill_kit_rejects_bad_limits() -> None:
    with pytest.raises(ResourceError, match="must be > 0"):
        SkillKit(["x"], None, [], [], output_limit_bytes=0)
    assert os.access(SCRIPTS / "sum.sh", os.X_OK)
