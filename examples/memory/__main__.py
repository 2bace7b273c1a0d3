"""Run the memory agent locally over resources/input.jsonl, one JSON result per line.

Uses OPENAI_BASE_URL / OPENAI_API_KEY (and OPENAI_MODEL, OPENAI_EMBEDDING_MODEL) when OPENAI_BASE_URL
is set; otherwise starts the bundled stub on 127.0.0.1.
"""

import json
import sys
from pathlib import Path

RESOURCES = Path(__file__).parent / "resources"


def main() -> int:
    from agentplan.testing.llm_stub import model_endpoint

    with model_endpoint():
        from agentplan import AgentConfiguration, AgentsExecutionEnvironment
        from examples.memory.memory_agent import MemoryAgent

        config = AgentConfiguration.load(RESOURCES / "agent_config.yaml", env={})
        inputs = [json.loads(line) for line in (RESOURCES / "input.jsonl").read_text().splitlines() if line]
        agents_env = AgentsExecutionEnvironment.get_execution_environment(config=config)
        output_list = agents_env.from_list([{"key": i["user"], "value": i} for i in inputs]).apply(
            MemoryAgent()).to_list()
        agents_env.execute()
        for entry in output_list:
            for result in entry.values():
                print(json.dumps(result))
        return 0


if __name__ == "__main__":
    sys.exit(main())
