"""Shared pytest fixtures; the logic lives in tests/kafka_support.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import jvm_archive, static_checks
from tests.kafka_support import (
    ClusterInBackground,
    KafkaCluster,
    describe_engine,
    selected_engine,
    start_cluster,
    start_tansu,
)


def pytest_report_header(config: pytest.Config) -> str:
    return f"broker: {describe_engine(selected_engine())}"


def pytest_sessionstart(session: pytest.Session) -> None:
    # The header above is hidden by -q (the README's command); this line is printed at every verbosity.
    if session.config.getoption("verbose") < 0:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"broker: {describe_engine(selected_engine())}")


# Fixtures that use the session's broker: a session with a test asking for one starts it in the background.
_BROKER_FIXTURES = frozenset({"kafka", "any_broker", "worker_factory"})


class _SessionBroker:
    wanted = False  # some collected test uses it
    background: ClusterInBackground | None = None
    claimed = False  # the kafka fixture has taken it (or started its own)


def pytest_collection_finish(session: pytest.Session) -> None:
    # Start the static checks the session will run now, so they overlap the tests before them.
    for item in session.items:
        if item.nodeid.startswith("tests/test_static_checks.py::") and hasattr(item, "callspec"):
            static_checks.start(item.callspec.params["tool"])
    if selected_engine() == "apache-kafka":
        # Broker JVMs start faster with a class-data-sharing archive; make it while the first tests run.
        if any(item.get_closest_marker("integration") for item in session.items):
            jvm_archive.start_training()
        _SessionBroker.wanted = any(_BROKER_FIXTURES.intersection(getattr(item, "fixturenames", ()))
                                    for item in session.items)


def pytest_sessionfinish(session: pytest.Session) -> None:
    static_checks.stop_all()
    jvm_archive.stop_training()
    if _SessionBroker.background is not None:
        _SessionBroker.background.close_unused()


@pytest.fixture(autouse=True)
def _broker_start_in_background() -> None:
    """Between tests (cheap checks): JVMs started from here on use the class archive once the training run
    has made it, and then the session's broker starts on a thread while the tests before its first user run."""
    jvm_archive.apply()
    if _SessionBroker.wanted and not _SessionBroker.claimed and _SessionBroker.background is None \
            and jvm_archive.settled():
        _SessionBroker.background = ClusterInBackground()


# The session broker waits this long for a training run still under way (when no test before it left
# time to finish it): a broker started with the archive saves ~3 s of start-up.
ARCHIVE_WAIT_S = 5.0


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaCluster]:
    """One cluster for the whole session: external, Apache Kafka, testcontainers or embedded Tansu."""
    _SessionBroker.claimed = True
    if _SessionBroker.background is None and selected_engine() == "apache-kafka":
        jvm_archive.apply(wait_s=ARCHIVE_WAIT_S)
    with start_cluster(_SessionBroker.background) as cluster:
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
