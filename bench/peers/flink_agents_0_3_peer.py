"""Peer: the seed's sentiment agent on Flink Agents 0.3.1 (PyFlink 1.20.5, local MiniCluster).

The agent is ``sentiment_agent_0_3`` (the example written in 0.3's API). Everything else is the
0.1.1 peer's (``flink_agents_peer.main``): a bounded collection of ``--count`` seed records as
the source (the Kafka flags are accepted and ignored), results collected back and counted,
start-up timed apart from the steady state.

0.3 runs the built-in chat action asynchronously (``chat.async``, on by default) on a pool of
``num-async-threads`` threads per subtask (default: twice the cores), so one subtask keeps
several model calls in flight: ``--async-threads`` and ``--parallelism`` tune it.

    bench/.peers-venv/flink03/bin/python bench/peers/flink_agents_0_3_peer.py --bootstrap - \\
        --input-topic - --output-topic - --count 200 --llm-base-url http://127.0.0.1:8000/v1 --model stub \\
        --parallelism 1 --async-threads 32
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import flink_agents_peer

PEER = "flink_agents_0_3"
DEFAULT_ASYNC_THREADS = 32  # the best of the settings tried on 2 cores: bench/peers/README.md
DEFAULT_PARALLELISM = 1


def _extra_args(parser: argparse.ArgumentParser) -> None:
    flink_agents_peer._extra_args(parser)
    parser.set_defaults(parallelism=DEFAULT_PARALLELISM)
    parser.add_argument("--async-threads", type=int, default=DEFAULT_ASYNC_THREADS,
                        help=f"num-async-threads: chat calls in flight per subtask (default {DEFAULT_ASYNC_THREADS})")
    parser.add_argument("--sync-chat", action="store_true", help="chat.async off: one model call at a time")


def build_job(args: argparse.Namespace, env: Any) -> tuple[Any, dict[str, Any]]:
    from flink_agents.api.core_options import AgentExecutionOptions
    from flink_agents.api.execution_environment import AgentsExecutionEnvironment
    from flink_agents.api.resource import ResourceType
    from sentiment_agent_0_3 import SentimentAnalysisAgent, TextInput, llm_connection_descriptor

    if args.async_threads <= 0:
        raise SystemExit("--async-threads must be positive")
    agents_env = AgentsExecutionEnvironment.get_execution_environment(env)
    config = agents_env.get_config()
    config.set(AgentExecutionOptions.CHAT_ASYNC, not args.sync_chat)
    config.set(AgentExecutionOptions.NUM_ASYNC_THREADS, args.async_threads)
    agents_env.add_resource("local_llm", ResourceType.CHAT_MODEL_CONNECTION, llm_connection_descriptor())
    input_stream = flink_agents_peer.seed_collection(args, env).map(lambda x: TextInput.model_validate_json(x))
    result_stream = (
        agents_env.from_datastream(input_stream, key_selector=lambda x: x.id)
        .apply(SentimentAnalysisAgent())
        .to_datastream()
    )
    return result_stream, {"chat_async": not args.sync_chat, "num_async_threads": args.async_threads}


if __name__ == "__main__":
    # The agent module lives in bench/peers, which main puts on every PYTHONPATH.
    sys.exit(flink_agents_peer.main(peer=PEER, extra_args=_extra_args, build_job=build_job, agent_dirs=list))
