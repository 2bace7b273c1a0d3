"""Run the sentiment agent locally over resources/input.txt, one result per line.

Uses OPENAI_BASE_URL / OPENAI_API_KEY / OPENAI_MODEL when OPENAI_BASE_URL is set; otherwise starts
the bundled OpenAI-compatible stub on 127.0.0.1 so the example runs anywhere.
"""

import sys
from pathlib import Path


def main() -> int:
    from agentplan.testing.llm_stub import model_endpoint

    with model_endpoint():
        from agentplan import AgentsExecutionEnvironment
        from examples.sentiment.custom_types import TextInput, local_llm_descriptor
        from examples.sentiment.sentiment_agent import SentimentAnalysisAgent

        agents_env = AgentsExecutionEnvironment.get_execution_environment()
        agents_env.add_resource("local_llm", local_llm_descriptor)
        lines = (Path(__file__).parent / "resources" / "input.txt").read_text(encoding="utf-8").splitlines()
        records = [TextInput.model_validate_json(line) for line in lines if line.strip()]
        output_list = (
            agents_env.from_list([{"key": r.id, "value": r} for r in records])
            .apply(SentimentAnalysisAgent())
            .to_list()
        )
        agents_env.execute()
        for entry in output_list:
            for result in entry.values():
                print(result.model_dump_json())
        return 0


if __name__ == "__main__":
    sys.exit(main())
