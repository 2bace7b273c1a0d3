"""Run the RAG agent locally: load resources/faq.jsonl into a fresh Chroma store, answer resources/questions.jsonl.

Prints one JSON result per question. Uses OPENAI_BASE_URL / OPENAI_API_KEY (and OPENAI_MODEL,
OPENAI_EMBEDDING_MODEL) when OPENAI_BASE_URL is set; otherwise starts the bundled stub on 127.0.0.1.
"""

import json
import os
import sys
import tempfile
from pathlib import Path

RESOURCES = Path(__file__).parent / "resources"


def main() -> int:
    from agentplan.testing.llm_stub import model_endpoint

    with model_endpoint(), tempfile.TemporaryDirectory() as kb_dir:
        from agentplan import AgentPlan, AgentsExecutionEnvironment, Document, ResourceType
        from examples.rag.rag_agent import COLLECTION, KB_DIR_ENV, RagAgent

        os.environ[KB_DIR_ENV] = kb_dir
        # The knowledge base, through the agent's own store descriptor (what `agentfleet kb load` does).
        store = AgentPlan.from_agent(RagAgent()).get_resource("faq_store", ResourceType.VECTOR_STORE)
        lines = (RESOURCES / "faq.jsonl").read_text(encoding="utf-8").splitlines()
        store.add([Document(**json.loads(line)) for line in lines if line.strip()], collection_name=COLLECTION)
        store.close()

        questions = [json.loads(line) for line in (RESOURCES / "questions.jsonl").read_text().splitlines() if line]
        agents_env = AgentsExecutionEnvironment.get_execution_environment()
        output_list = agents_env.from_list([{"key": q["id"], "value": q} for q in questions]).apply(
            RagAgent()).to_list()
        agents_env.execute()
        for entry in output_list:
            for result in entry.values():
                print(json.dumps(result))
        return 0


if __name__ == "__main__":
    sys.exit(main())
