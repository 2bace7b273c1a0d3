"""Run the review agent locally over resources/input.txt, one ReviewDecision (JSON) per line.

Uses OPENAI_BASE_URL / OPENAI_API_KEY / OPENAI_MODEL when OPENAI_BASE_URL is set; otherwise starts
the bundled OpenAI-compatible stub on 127.0.0.1. The inputs carry ``[[tool:...]]`` directives the
stub obeys (a real model reads them as part of the question and calls the tool on its own).
"""

import os
import sys
from pathlib import Path


def main() -> int:
    from agentplan.testing.llm_stub import model_endpoint

    with model_endpoint():
        from agentplan import AgentsExecutionEnvironment, OpenAIChatModelConnection, ResourceDescriptor
        from examples.react_review.review_agent import ReviewRequest, build_agent

        agents_env = AgentsExecutionEnvironment.get_execution_environment()
        agents_env.add_resource("review_llm", ResourceDescriptor(
            clazz=OpenAIChatModelConnection,
            api_base_url=os.environ["OPENAI_BASE_URL"],
            api_key=os.environ.get("OPENAI_API_KEY", "sk-local"),
            timeout=300.0,
            max_retries=1,
        ))
        lines = (Path(__file__).parent / "resources" / "input.txt").read_text(encoding="utf-8").splitlines()
        requests = [ReviewRequest.model_validate_json(line) for line in lines if line.strip()]
        output_list = (
            agents_env.from_list([{"key": r.id, "value": r} for r in requests])
            .apply(build_agent("review_llm"))
            .to_list()
        )
        agents_env.execute()
        for entry in output_list:
            for decision in entry.values():
                print(decision.model_dump_json())
        return 0


if __name__ == "__main__":
    sys.exit(main())
