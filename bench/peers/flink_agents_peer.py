"""Peer: the seed's Flink Agents 0.1.1 sentiment workflow agent on a local MiniCluster.

``main`` is shared with the 0.3.1 peer (``flink_agents_0_3_peer``), which passes its own job.

The agent, its prompt, models and connection are our ``examples/sentiment`` (the seed's agent)
with its imports turned back into Flink Agents' by ``flink_port``, pointed at the benchmark's
LLM endpoint. As the issue specifies, the source is a bounded collection
of ``--count`` seed records (the seed's input lines cycled), not Kafka: ``--bootstrap``,
``--input-topic``, ``--output-topic`` and ``--group`` are accepted for a uniform CLI and
ignored. The results are collected back into this process, counted and printed (stderr,
with the seconds since job submission).

Timing is split because the JVM and the job's Python workers take seconds to start:
``startup_s`` is process start to first output, ``seconds``/``records_per_s`` cover first
to last output (steady state), ``records_per_s_with_startup`` covers job submission to last
output. There is no per-record latency: the collection's records all exist at job start.

    bench/.peers-venv/bin/python bench/peers/flink_agents_peer.py --bootstrap - --input-topic - \\
        --output-topic - --count 200 --llm-base-url http://127.0.0.1:8000/v1 --model stub
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flink_port
import peer_common

PROCESS_STARTED = time.time()
logger = logging.getLogger("flink_agents_peer")

PEER = "flink_agents"


def _extra_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--parallelism", type=int, default=None,
                        help="Flink parallelism (default: Flink's local default, the number of cores)")
    parser.add_argument("--seed-ids", action="store_true",
                        help="keep the seed's 7 ids instead of a unique id per record (serialises per key)")
    parser.add_argument("--input-file", type=Path, default=peer_common.SEED_INPUT)


def _exit_on_deadline(timeout_s: float) -> threading.Timer:
    def expire() -> None:
        logger.error("no result within %.0fs; exiting", timeout_s)
        os._exit(3)  # the JVM child is ended by the caller (a session of its own)

    timer = threading.Timer(timeout_s, expire)
    timer.daemon = True
    timer.start()
    return timer


def _write_port() -> list[Path]:
    """The example ported to Flink Agents 0.1.1, written to a temporary directory; returns it."""
    agent_dir = flink_port.write_port(Path(tempfile.mkdtemp(prefix="flink-agents-port-")))
    atexit.register(shutil.rmtree, agent_dir, True)
    return [agent_dir]


def _build_job(args: argparse.Namespace, env: Any) -> Any:
    """Flink Agents 0.1.1: the example ported by imports, over a bounded collection; returns the result stream."""
    from custom_types import TextInput, local_llm_descriptor
    from flink_agents.api.execution_environment import AgentsExecutionEnvironment
    from sentiment_agent import SentimentAnalysisAgent

    agents_env = AgentsExecutionEnvironment.get_execution_environment(env)
    agents_env.add_resource("local_llm", local_llm_descriptor)
    input_stream = seed_collection(args, env).map(lambda x: TextInput.model_validate_json(x))
    return (
        agents_env.from_datastream(input_stream, key_selector=lambda x: x.id)
        .apply(SentimentAnalysisAgent())
        .to_datastream()
    )


def add_module_dirs(*dirs: Path) -> None:
    """Make modules importable here, in the JVM's embedded Python and in PyFlink's workers.

    They inherit PYTHONPATH when they start: call this before the StreamExecutionEnvironment.
    """
    module_dirs = [str(d) for d in dirs] + [str(Path(peer_common.__file__).resolve().parent)]
    os.environ["PYTHONPATH"] = os.pathsep.join(module_dirs)
    sys.path[:0] = module_dirs


def seed_collection(args: argparse.Namespace, env: Any) -> Any:
    """The ``--count`` seed records as a bounded stream of JSON strings."""
    from pyflink.common import Types

    lines = [json.dumps(r, ensure_ascii=False)
             for r in peer_common.seed_records(args.count, args.input_file, unique_ids=not args.seed_ids)]
    return env.from_collection(lines, type_info=Types.STRING())


def _as_json(result: Any) -> str:
    return result.model_dump_json() if hasattr(result, "model_dump_json") else json.dumps(result, default=str)


def main(argv: list[str] | None = None, peer: str = PEER,
         extra_args: Callable[[argparse.ArgumentParser], None] = _extra_args,
         build_job: Callable[[argparse.Namespace, Any], tuple[Any, dict[str, Any]]] | None = None,
         agent_dirs: Callable[[], list[Path]] = _write_port) -> int:
    """Run the job and print the result line.

    ``agent_dirs`` gives the directories the agent's modules are imported from (besides
    bench/peers); ``build_job`` gives the result stream and extra result fields.
    """
    args = peer_common.parse_args(peer, argv, extra_args)
    # The example's connection and model settings read these.
    os.environ["OPENAI_BASE_URL"] = args.llm_base_url
    os.environ["OPENAI_API_KEY"] = peer_common.DUMMY_API_KEY
    os.environ["OPENAI_MODEL"] = args.model
    timer = _exit_on_deadline(args.timeout_s)
    # apache-beam imports pkg_resources (hence the setuptools pin); its deprecation warning is noise.
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    cpu_meter = peer_common.ProcessTreeCpu()
    cpu_meter.start()

    add_module_dirs(*agent_dirs())
    from pyflink.datastream import StreamExecutionEnvironment

    env = StreamExecutionEnvironment.get_execution_environment()
    jvm_ready = time.time()
    if args.parallelism is not None:
        env.set_parallelism(args.parallelism)
    if build_job is None:
        result_stream, extra = _build_job(args, env), {}
    else:
        result_stream, extra = build_job(args, env)

    book = peer_common.LatencyBook()
    cpu_at_first_output = 0.0
    first_output = None
    submitted = time.time()
    # execute_and_collect runs the job (what agents_env.execute() does) and streams the
    # results back here, so each can be timed and counted.
    with result_stream.execute_and_collect() as results:
        for result in results:
            book.output(None)
            if first_output is None:
                first_output = book.last_output
                cpu_at_first_output = cpu_meter.total()
            print(f"{book.last_output - submitted:.3f}s {_as_json(result)}", file=sys.stderr)
            if book.outputs >= args.count:
                cpu = cpu_meter.total()
                break
        else:
            cpu = cpu_meter.total()
    timer.cancel()
    cpu_meter.stop()

    last_output = book.last_output
    steady = (last_output - first_output) if first_output and last_output and book.outputs > 1 else None
    cpu_steady = cpu - cpu_at_first_output
    result_line = {
        "peer": peer,
        "records": book.outputs,
        "expected": args.count,
        "seconds": round(steady, 3) if steady else None,
        "records_per_s": round((book.outputs - 1) / steady, 2) if steady else None,
        "cpu_seconds": round(cpu, 2),
        "cpu_seconds_steady": round(cpu_steady, 2),
        # First to last output, as the rate: the JVM's and workers' start-up is not per record.
        "cpu_ms_per_record": round(1000 * cpu_steady / (book.outputs - 1), 2) if book.outputs > 1 else None,
        "cpu_ms_per_record_with_startup": round(1000 * cpu / book.outputs, 2) if book.outputs else None,
        "p50_ms": None,
        "p99_ms": None,
        "jvm_start_s": round(jvm_ready - PROCESS_STARTED, 2),
        "startup_s": round(first_output - PROCESS_STARTED, 2) if first_output else None,
        "submit_to_first_output_s": round(first_output - submitted, 2) if first_output else None,
        "records_per_s_with_startup": round(book.outputs / (last_output - submitted), 2) if last_output else None,
        "parallelism": env.get_parallelism(),
        "unique_ids": not args.seed_ids,
        **extra,
    }
    print(json.dumps(result_line), flush=True)
    return 0 if book.outputs >= args.count else 1


if __name__ == "__main__":
    sys.exit(main())
