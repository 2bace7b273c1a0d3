"""Shared pytest fixtures; the logic lives in tests/kafka_support.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import static_checks
from tests.kafka_support import KafkaCluster, describe_engine, selected_engine, start_cluster, start_tansu


def pytest_report_header(config: pytest.Config) -> str:
    return f"broker: {describe_engine(selected_engine())}"


def pytest_sessionstart(session: pytest.Session) -> None:
    # The header above is hidden by -q (the README's command); this line is printed at every verbosity.
    if session.config.getoption("verbose") < 0:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"broker: {describe_engine(selected_engine())}")


def pytest_collection_finish(session: pytest.Session) -> None:
    # Start the static checks the session will run now, so they overlap the tests before them.
    for item in session.items:
        if item.nodeid.startswith("tests/test_static_checks.py::") and hasattr(item, "callspec"):
            static_checks.start(item.callspec.params["tool"])


def pytest_sessionfinish(session: pytest.Session) -> None:
    static_checks.stop_all()


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaCluster]:
    """One cluster for the whole session: external, Apache Kafka, testcontainers or embedded Tansu."""
    with start_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def tansu() -> Iterator[KafkaCluster]:
    """The embedded Tansu broker, for the smoke subset run on the zero-install default."""
    with start_tansu() as cluster:
        yield cluster


# On a Tansu session the second run would repeat the first.
_SMOKE_BROKERS = ["kafka"] if selected_engine() == "tansu" else ["kafka", "tansu"]


@pytest.fixture(params=_SMOKE_BROKERS)
def any_broker(request: pytest.FixtureRequest) -> KafkaCluster:
    """Smoke tests run twice: on the session's broker and on the embedded Tansu broker."""
    cluster: KafkaCluster = request.getfixturevalue(request.param)
    return cluster
