"""Run the calculator agent locally over resources/input.txt, one ``{"id", "answer"}`` JSON per line.

Starts the calculator MCP server on 127.0.0.1 unless ``CALCULATOR_MCP_URL`` is set, and the bundled
OpenAI-compatible stub unless ``OPENAI_BASE_URL`` is set. The questions carry ``[[tool:...]]``
directives the stub obeys (a real model reads them as part of the question and calls the tool).
"""

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def calculator_endpoint() -> Iterator[str]:
    configured = os.environ.get("CALCULATOR_MCP_URL")
    if configured:
        yield configured
        return
    from examples.mcp_agent.calculator_server import running_server
    from worker.kafka.embedded import free_port

    with running_server(free_port()) as server:
        os.environ["CALCULATOR_MCP_URL"] = server.endpoint
        try:
            yield server.endpoint
        finally:
            os.environ.pop("CALCULATOR_MCP_URL", None)


def main() -> int:
    from agentplan.testing.llm_stub import model_endpoint

    with model_endpoint(), calculator_endpoint():
        from agentplan import AgentsExecutionEnvironment
        from examples.mcp_agent.mcp_agent import CalculatorAgent

        lines = (Path(__file__).parent / "resources" / "input.txt").read_text(encoding="utf-8").splitlines()
        inputs = [json.loads(line) for line in lines if line.strip()]
        agents_env = AgentsExecutionEnvironment.get_execution_environment()
        output_list = agents_env.from_list([{"key": q["id"], "value": q} for q in inputs]) \
            .apply(CalculatorAgent()).to_list()
        agents_env.execute()
        for entry in output_list:
            for output in entry.values():
                print(json.dumps(output))
        return 0


if __name__ == "__main__":
    sys.exit(main())
