"""Peers for the side-by-side benchmark: the same sentiment job on other frameworks.

Each peer is a script run by one of the separate peers venvs (``bench/.peers-venv/``, built
on first use by :func:`bench.peers.venv.ensure_venv`) with one CLI and one JSON result line:

* ``flink_agents`` — the seed's Flink Agents 0.1.1 workflow agent on a local MiniCluster,
  fed by a bounded collection of ``count`` seed records (not Kafka).
* ``flink_agents_0_3`` — the same agent in Flink Agents 0.3.1's API, async chat on, same source.
* ``quix`` — Quix Streams, exactly-once, per-key state, sync ``openai`` call.
* ``naive`` — confluent-kafka consume -> ``openai`` -> produce, one record at a time, at-least-once.
* ``asyncio`` — a hand-written asyncio service: ``AsyncOpenAI`` on aiohttp, bounded in flight,
  at-least-once commits below the lowest unfinished record.

The Kafka peers read ``count`` records the caller has produced to the input topic (the
seed's JSON lines, keyed by id: see :func:`bench.peers.peer_common.seed_records`).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from bench.peers.exceptions import PeerError, PeerRunError, PeerVenvError
from bench.peers.venv import ensure_venv, peer_env, venv_python

__all__ = ["COLLECTION_PEERS", "PEERS", "PeerError", "PeerRunError", "PeerVenvError", "peer_command", "run_peer"]

logger = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent
# peer name -> (script, the peers venv it runs in)
PEERS: dict[str, tuple[Path, str]] = {
    "flink_agents": (_HERE / "flink_agents_peer.py", "flink"),
    "flink_agents_0_3": (_HERE / "flink_agents_0_3_peer.py", "flink03"),
    "quix": (_HERE / "quix_peer.py", "kafka"),
    "naive": (_HERE / "naive_peer.py", "kafka"),
    "asyncio": (_HERE / "asyncio_peer.py", "kafka"),
}
# Peers that build their input as a bounded collection and ignore the input topic.
COLLECTION_PEERS = ("flink_agents", "flink_agents_0_3")
# Time allowed beyond the peer's own deadline for JVM shutdown, final commits and exit.
_EXIT_GRACE_S = 60.0


def peer_command(name: str, *, bootstrap: str, input_topic: str, output_topic: str, count: int,
                 llm_base_url: str, model: str, timeout_s: float, group: str | None = None,
                 extra_args: list[str] | None = None) -> list[str]:
    if name not in PEERS:
        raise PeerRunError(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
    if not llm_base_url:
        raise PeerRunError(f"peer {name}: llm_base_url is required (an OpenAI-compatible endpoint, e.g. the stub's)")
    if count <= 0:
        raise PeerRunError(f"peer {name}: count must be positive, got {count}")
    script, venv = PEERS[name]
    command = [str(venv_python(venv)), str(script),
               "--bootstrap", bootstrap, "--input-topic", input_topic, "--output-topic", output_topic,
               "--count", str(count), "--llm-base-url", llm_base_url, "--model", model,
               "--timeout-s", str(timeout_s)]
    if group is not None:
        command += ["--group", group]
    return command + list(extra_args or [])


def run_peer(name: str, *, bootstrap: str, input_topic: str, output_topic: str, count: int,
             llm_base_url: str, model: str, timeout_s: float, group: str | None = None,
             extra_args: list[str] | None = None) -> dict[str, Any]:
    """Run one peer to completion and return its parsed result line.

    Builds the peers venv first if needed (minutes, once). Raises PeerRunError when the
    peer exits non-zero, overruns ``timeout_s`` (plus a grace for shutdown) or prints no
    JSON result; the error carries the tail of its stderr.
    """
    if name not in PEERS:
        raise PeerRunError(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
    venv = PEERS[name][1]
    ensure_venv(venv)
    command = peer_command(name, bootstrap=bootstrap, input_topic=input_topic, output_topic=output_topic,
                           count=count, llm_base_url=llm_base_url, model=model, timeout_s=timeout_s,
                           group=group, extra_args=extra_args)
    logger.info("running peer %s: %s", name, " ".join(command))
    # A session of its own: on time-out the whole tree goes (Flink's JVM and Python workers too).
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=peer_env(venv),
                            cwd=_HERE, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s + _EXIT_GRACE_S)
    except subprocess.TimeoutExpired as exc:
        _kill_session(proc)
        _, stderr = proc.communicate()
        raise PeerRunError(f"peer {name} did not finish within {timeout_s + _EXIT_GRACE_S:.0f}s:\n{stderr[-3000:]}") \
            from exc
    except BaseException:
        _kill_session(proc)
        proc.communicate()
        raise
    _kill_session(proc)  # leftovers of a peer that exited without stopping its children
    result = _result_line(stdout)
    if proc.returncode != 0 or result is None:
        raise PeerRunError(f"peer {name} exited {proc.returncode} (result: {result}):\n{stderr[-3000:]}")
    return result


def _kill_session(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _result_line(stdout: str) -> dict[str, Any] | None:
    """The last stdout line that parses as a JSON object with a "peer" field."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                parsed = json.loads(line)
            except ValueError:
                continue
            if isinstance(parsed, dict) and "peer" in parsed:
                return parsed
    return None
