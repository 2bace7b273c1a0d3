"""Run the skills agent locally over resources/input.txt, one ``{"id", "answer"}`` JSON per line.

Uses OPENAI_BASE_URL / OPENAI_API_KEY / OPENAI_MODEL when OPENAI_BASE_URL is set; otherwise the
bundled stub, which obeys the ``[[tool:...]]`` directives in the questions.
"""

import json
import sys
from pathlib import Path


def main() -> int:
    from agentplan.testing.llm_stub import model_endpoint

    with model_endpoint():
        from agentplan import AgentsExecutionEnvironment
        from examples.skills_agent.skills_agent import SkillsAgent

        lines = (Path(__file__).parent / "resources" / "input.txt").read_text(encoding="utf-8").splitlines()
        inputs = [json.loads(line) for line in lines if line.strip()]
        agents_env = AgentsExecutionEnvironment.get_execution_environment()
        output_list = agents_env.from_list([{"key": q["id"], "value": q} for q in inputs]) \
            .apply(SkillsAgent()).to_list()
        agents_env.execute()
        for entry in output_list:
            for output in entry.values():
                print(json.dumps(output))
        return 0


if __name__ == "__main__":
    sys.exit(main())
