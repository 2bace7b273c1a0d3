"""Fixtures for worker integration tests: the LLM stub, unique topics, worker factories."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentplan.testing.llm_stub import StubLLMServer
from tests.worker.integration.harness import WorkerProcess


@pytest.fixture()
def stub_llm() -> Iterator[StubLLMServer]:
    with StubLLMServer() as server:
        yield server


@pytest.fixture()
def worker_factory(request: pytest.FixtureRequest, tmp_path: Path,
                   stub_llm: StubLLMServer) -> Iterator[Callable[..., WorkerProcess]]:
    # Smoke tests ask for ``any_broker`` (the session's broker, then Tansu); the rest use ``kafka``.
    kafka = request.getfixturevalue("any_broker" if "any_broker" in request.fixturenames else "kafka")
    started: list[WorkerProcess] = []

    def make(agent: str, input_topic: str, output_topic: str, app_id: str, instance_id: str | None = None,
             state_dir: Path | None = None, extra_args: list[str] | None = None, start: bool = True,
             env: dict[str, str] | None = None) -> WorkerProcess:
        worker = WorkerProcess(kafka.bootstrap_servers, agent, input_topic, output_topic, app_id,
                               state_dir or tmp_path / f"state-{instance_id or len(started)}",
                               instance_id or f"w{len(started)}", tmp_path,
                               env={"OPENAI_BASE_URL": stub_llm.base_url, "OPENAI_API_KEY": "test",
                                    **(env or {})},
                               extra_args=extra_args)
        started.append(worker)
        return worker.start() if start else worker

    yield make
    for worker in started:
        if worker.running():
            worker.kill()


@pytest.fixture()
def app_id() -> str:
    return f"app-{uuid.uuid4().hex[:8]}"
