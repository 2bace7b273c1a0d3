"""A class-data-sharing archive (AppCDS) for the test brokers' JVMs: each start loads Kafka's classes mapped.

A session starts about a dozen broker JVMs (the session broker, the secured one, the 3-node cluster and its
restarts, the CLI and demo tests) plus a format JVM for each new data directory. With the archive a node
starts in ~5.5 s instead of ~8.5 s on this 2-core machine and spends ~40% less CPU doing it.

The archive is made once per machine by a training run (one broker started and stopped under
``-XX:ArchiveClassesAtExit``) in a subprocess that :func:`start_training` launches in the background when
collection finishes, while the first tests (none needing a broker) run. It is kept beside the broker's jars
in the cache, named after the Kafka and Java versions, so a new JDK or Kafka gets a new archive. Once it
exists, :func:`apply` hands it to every JVM the session starts afterwards (brokers, format runs, and the
CLI's and demo's brokers, which inherit the environment) through ``JDK_JAVA_OPTIONS``. Any failure only
means no archive: the JVMs start as before.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from worker.kafka import apache
from worker.kafka.apache import KAFKA_VERSION, ApacheKafka, cache_root, check_requirements, ensure_jars

__all__ = ["apply", "archive_path", "settled", "start_training", "stop_training"]

logger = logging.getLogger(__name__)

_OPTIONS_VARIABLE = "JDK_JAVA_OPTIONS"  # read by the `java` launcher of JDK 9+, prepended to its arguments
_DUMP_GRACE_S = 120.0
_REPO = Path(__file__).resolve().parents[1]

_training: subprocess.Popen[bytes] | None = None
_applied: str | None = None


@functools.lru_cache(maxsize=1)
def _java_build() -> str | None:
    """The JVM's full build (``17.0.15+6-Debian-1deb12u1``): an archive only loads on the JVM that made it."""
    java = shutil.which("java")
    if java is None:
        return None
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False,
                             env={k: v for k, v in os.environ.items() if k != _OPTIONS_VARIABLE})
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"\(build ([^)]+)\)", out.stderr + out.stdout)
    return re.sub(r"[^A-Za-z0-9._+-]", "_", match.group(1)) if match else None


def archive_path() -> Path | None:
    """Where this machine's archive is (or would be) kept; None without a usable ``java``."""
    build = _java_build()
    if build is None:
        return None
    return cache_root() / f"kafka-{KAFKA_VERSION}" / f"broker-classes-java-{build}.jsa"


def start_training() -> None:
    """Make the archive in the background unless it exists (or is being made by this session)."""
    global _training
    path = archive_path()
    if _training is not None or path is None or path.is_file():
        return
    log = path.parent / "broker-classes-training.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        _training = subprocess.Popen([sys.executable, "-m", "tests.jvm_archive", str(path)], cwd=_REPO,
                                     env={**os.environ, "PYTHONPATH": str(_REPO)}, stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def apply(wait_s: float = 0.0) -> bool:
    """Hand the archive to the JVMs started from now on, once it exists; True if they get it.

    ``wait_s`` bounds how long to wait for a training run still under way. Call it from the main thread
    only: it changes the environment that subprocesses inherit.
    """
    global _applied, _training
    if _applied is not None:
        return True
    if _training is not None:
        try:
            _training.wait(timeout=wait_s) if wait_s > 0 else _training.poll()
        except subprocess.TimeoutExpired:
            return False
        if _training.returncode is None:
            return False
        _training = None
    path = archive_path()
    if path is None or not path.is_file():
        return False
    _applied = f"-XX:SharedArchiveFile={path}"
    inherited = os.environ.get(_OPTIONS_VARIABLE, "").strip()
    os.environ[_OPTIONS_VARIABLE] = f"{inherited} {_applied}".strip()
    return True


def settled() -> bool:
    """True once no training run is under way (none was needed, or it ended either way)."""
    return _training is None or _training.poll() is not None


def stop_training() -> None:
    """End a training run still going when the session ends (its broker stops with it, by its own pid)."""
    global _training
    if _training is not None and _training.poll() is None:
        _training.terminate()
        try:
            _training.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _training.kill()
            _training.wait(timeout=10)
    _training = None


class _TrainingBroker(ApacheKafka):
    """A broker whose JVM (not the format run's) writes the classes it loaded to ``archive`` as it exits."""

    def __init__(self, archive: Path) -> None:
        super().__init__()
        self.archive = archive

    def _java_command(self, java: str, main: str, *args: str) -> list[str]:
        command = super()._java_command(java, main, *args)
        if main == "kafka.Kafka":
            command.insert(1, f"-XX:ArchiveClassesAtExit={self.archive}")
        return command


def _train(path: Path) -> int:
    """Start one broker with its classes dumped at exit, stop it, check the archive and move it into place."""
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be training the same archive
        if path.is_file():
            return 0
        staging = path.with_suffix(f".{os.getpid()}.tmp")
        # Writing the archive takes the exiting JVM many seconds on a busy machine: do not kill it meanwhile.
        apache._STOP_GRACE_S = _DUMP_GRACE_S
        broker = _TrainingBroker(staging)
        started = time.monotonic()
        try:
            broker.start()
            print(f"training broker ready after {time.monotonic() - started:.1f}s", flush=True)
        finally:
            broker.stop()  # the JVM writes the archive as it exits
        print(f"training broker stopped after {time.monotonic() - started:.1f}s", flush=True)
        if not staging.is_file() or not _loads(staging):
            print(f"the broker left no usable archive at {staging}", file=sys.stderr)
            staging.unlink(missing_ok=True)
            return 1
        staging.rename(path)
    return 0


def _loads(archive: Path) -> bool:
    """True if a JVM on the broker's class path maps ``archive`` (-Xshare:on: fail rather than go without).

    A JVM killed while writing leaves a truncated archive, which would crash every JVM that maps it.
    """
    command = [check_requirements(need_maven=False), f"-XX:SharedArchiveFile={archive}", "-Xshare:on",
               f"-XX:ErrorFile={archive.parent / 'broker-classes-check-crash.log'}",
               "-cp", f"{ensure_jars()}/*", "kafka.tools.StorageTool", "random-uuid"]
    env = {k: v for k, v in os.environ.items() if k != _OPTIONS_VARIABLE}
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, env=env,
                                stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if result.returncode != 0:
        print(f"the archive does not load (exit {result.returncode}): {result.stdout}{result.stderr}",
              file=sys.stderr)
    return result.returncode == 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    # stop_training() sends SIGTERM: leave through the finally blocks that stop the broker's JVM.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(1))
    sys.exit(_train(Path(sys.argv[1])))
