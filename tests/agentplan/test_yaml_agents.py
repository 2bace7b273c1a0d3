"""YAML agents (Flink Agents 0.3's declarative format): what a file declares, and errors that name the
file, the line and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentplan import AgentsExecutionEnvironment, InputEvent, ResourceType
from agentplan.yaml_agents import YamlAgentError, load_agents

HEADER = "agents:\n  - name: a\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agents.yaml"
    path.write_text(text)
    return path


def test_aliases_shared_actions_and_text_prompts(tmp_path: Path) -> None:
    path = write(tmp_path, """\
actions:
  - name: shared_start
    function: examples.flink03.review_analysis:ReviewAnalysisAgent.process_input
    listen_to: [input, my_custom_type]
    config: {retries: 2}
prompts:
  - name: greeting
    text: "Hello {name}"
skills:
  - name: local_skills
    paths: [/srv/skills]
    package: [{package: examples, resource: skills}]
agents:
  - name: first
    chat_model_connections:
      - {name: conn, clazz: vllm, api_base_url: "http://127.0.0.1:1/v1"}
    chat_model_setups:
      - {name: model, clazz: openai, connection: conn, prompt: greeting, temperature: 0.1}
    actions: [shared_start]
  - name: second
    actions: [shared_start]
""")
    agents = load_agents(path)
    assert sorted(agents) == ["first", "second"]
    first = agents["first"]
    action = first.actions()["shared_start"]
    assert action.events == (InputEvent.EVENT_TYPE, "my_custom_type") and action.config == {"retries": 2}
    resources = first.resources()
    assert resources["model"][0] is ResourceType.CHAT_MODEL
    assert resources["model"][1].arguments == {"connection": "conn", "prompt": "greeting", "temperature": 0.1}
    assert resources["conn"][1].clazz.__name__ == "OpenAIChatModelConnection"
    assert resources["greeting"][1].format_string(name="Ada") == "Hello Ada"
    kind, skills = resources["local_skills"]
    assert kind is ResourceType.SKILLS and [src.scheme for src in skills.sources] == ["local", "package"]
    env = AgentsExecutionEnvironment.get_execution_environment()
    with pytest.raises(YamlAgentError, match="already loaded"):
        env.load_yaml([path, path])


@pytest.mark.parametrize(("text", "line", "message"), [
    (HEADER + "    actions:\n      - name: x\n        listen_to: [input]\n", 4,
     r"agents\[0\]\.actions\[0\]\.function: Field required"),
    (HEADER + "    actions:\n      - name: x\n        function: m:f\n        listen_to: []\n", 6,
     r"listen_to: List should have at least 1"),
    (HEADER + "    chat_model_connections:\n      - name: c\n        clazz: ollama\n", 5,
     r"chat_model_connections\[0\]\.clazz: ResourceName\.ChatModel\.OLLAMA_CONNECTION .* not implemented"),
    (HEADER + "    toools: []\n", 3, r"agents\[0\]\.toools: Extra inputs are not permitted"),
    (HEADER + "    actions:\n      - name: x\n        function: no_such_module_x:f\n        listen_to: [input]\n", 5,
     r"function: cannot import module 'no_such_module_x'"),
    (HEADER + "    actions: [missing]\n", 3, r"no shared action named 'missing'"),
    (HEADER + "  - name: a\n", 3, r"agents\[1\]\.name: duplicate agent name 'a'"),
    (HEADER + "    skills:\n      - name: s\n        classpath: [skills]\n", 5, r"classpath skills are Java-only"),
    (HEADER + "    prompts:\n      - name: p\n        text: [unclosed\n", 6, r"not valid YAML"),
    (HEADER + "    chat_model_setups:\n      - name: s\n        clazz: openai\n        type: java\n", 6,
     r"type: Input should be 'python'"),
])
def test_errors_name_file_line_and_field(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(YamlAgentError, match=rf"^{path}:{line}: .*{message}"):
        load_agents(path)
