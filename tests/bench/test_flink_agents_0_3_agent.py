"""The Flink Agents 0.3.1 peer's agent, run by Flink Agents 0.3.1's own local runner against the LLM stub.

It must send the very chat request our example agent sends and turn each answer into the seed's
result. Runs in the ``flink03`` peers venv (no JVM: the local runner is pure Python); skipped when
that venv has not been built.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from agentplan.testing.llm_stub import StubLLMServer
from bench.peers import peer_common
from bench.peers.venv import peer_env, venv_python

PEERS_DIR = os.path.dirname(os.path.abspath(peer_common.__file__))

# Run inside the flink03 venv: the seed records through the 0.3 agent, one JSON result per line.
SCRIPT = """
import json, sys
from flink_agents.api.execution_environment import AgentsExecutionEnvironment
from flink_agents.api.resource import ResourceType
import peer_common
from sentiment_agent_0_3 import SentimentAnalysisAgent, TextInput, llm_connection_descriptor

env = AgentsExecutionEnvironment.get_execution_environment()
env.add_resource("local_llm", ResourceType.CHAT_MODEL_CONNECTION, llm_connection_descriptor())
records = [TextInput(**r) for r in peer_common.seed_records(int(sys.argv[1]))]
outputs = env.from_list([{"key": r.id, "value": r} for r in records]).apply(SentimentAnalysisAgent()).to_list()
env.execute()
for entry in outputs:
    for result in entry.values():
        print(result.model_dump_json() if hasattr(result, "model_dump_json") else json.dumps(result))
"""


@pytest.mark.skipif(not venv_python("flink03").exists(),
                    reason="peers venv flink03 not built (python -m bench.peers.venv flink03)")
def test_the_0_3_agent_sends_our_request_and_returns_the_seed_result() -> None:
    count = 7
    with StubLLMServer() as stub:
        env = peer_env("flink03") | {"OPENAI_BASE_URL": stub.base_url, "OPENAI_API_KEY": "sk-test",
                                     "OPENAI_MODEL": "stub-model", "PYTHONPATH": PEERS_DIR}
        proc = subprocess.run([str(venv_python("flink03")), "-c", SCRIPT, str(count)], capture_output=True,
                              text=True, env=env, cwd=PEERS_DIR, timeout=240)
        assert proc.returncode == 0, proc.stderr[-3000:]
        requests = stub.requests
    records = peer_common.seed_records(count)
    results = {r["id"]: r for r in (json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{"))}
    assert set(results) == {r["id"] for r in records}
    assert all(r["sentiment"] in {"positive", "negative", "neutral"} and r["key_phrases"] for r in results.values())
    sent = sorted(json.dumps([{"role": m["role"], "content": m["content"]} for m in req["messages"]])
                   for req in requests)
    expected = sorted(json.dumps(peer_common.sentiment_messages(r["text"])) for r in records)
    assert sent == expected
    assert {req["model"] for req in requests} == {"stub-model"}
