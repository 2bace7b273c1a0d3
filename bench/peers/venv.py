"""Build, idempotently, the separate venvs the benchmark peers run in (``bench/.peers-venv/``).

The peers need libraries that must not enter the project's own venv (PyFlink pins old
apache-beam/numpy/pandas/pyarrow). They also cannot share one venv with each other:
quixstreams requires ``confluent-kafka[avro]``, whose ``avro`` package replaces the
``avro`` module of PyFlink's ``avro-python3``, and PyFlink's Python workers then fail
(``ImportError: cannot import name 'AvroTypeException' from 'avro.io'``). Hence three:

* ``flink`` — apache-flink 1.20.3, flink-agents 0.1.1 (the Flink Agents 0.1.1 peer);
* ``flink03`` — apache-flink 1.20.5, flink-agents 0.3.1 and its Flink jars (the Flink Agents 0.3.1 peer;
  its own venv because the two flink-agents releases cannot share one);
* ``kafka`` — quixstreams, openai (with its aiohttp transport), confluent-kafka (the Quix and hand-written peers).

A venv is rebuilt only when its requirement list changes; a stamp file in it records the
list, the resolved versions and how long the install took.

    .venv/bin/python -m bench.peers.venv          # build what is missing, print the stamps
    .venv/bin/python -m bench.peers.venv --force  # rebuild from scratch
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.peers import flink_agents_jars
from bench.peers.exceptions import PeerVenvError

__all__ = ["PEERS_VENV_ROOT", "VENV_REQUIREMENTS", "ensure_venv", "peer_env", "venv_dir", "venv_python"]

logger = logging.getLogger(__name__)

BENCH_DIR = Path(__file__).resolve().parents[1]
PEERS_VENV_ROOT = BENCH_DIR / ".peers-venv"
_STAMP_NAME = "peers-stamp.json"

# flink-agents 0.1.1 is the only release with a wheel (later ones are sdists whose build
# downloads the Flink jars: see flink_agents_jars). apache-beam (pulled in by PyFlink) imports
# pkg_resources, which newer setuptools drop, while flink-agents requires setuptools>=75.3:
# hence the window. 0.3.1's Flink 1.20 jar is built against Flink 1.20.5, the latest 1.20.x.
VENV_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "flink": (
        "apache-flink==1.20.3",
        "flink-agents==0.1.1",
        "setuptools>=75.3,<81",
        "openai",
    ),
    "flink03": (
        "apache-flink==1.20.5",
        "flink-agents==0.3.1",
        "setuptools>=75.3,<81",
        "openai",
    ),
    "kafka": (
        "quixstreams==3.28.1",  # the latest release (2026-12-03)
        "openai[aiohttp]",
        "confluent-kafka",
    ),
}
# Environment for pip per venv: flink-agents 0.3.1's sdist build would fetch its jars itself;
# flink_agents_jars puts them in place afterwards (from Maven Central or built from source).
_PIP_ENV: dict[str, dict[str, str]] = {"flink03": {"FLINK_AGENTS_SKIP_JAR_DOWNLOAD": "1"}}
# PyFlink 1.20 supports Python 3.8-3.11.
_SUPPORTED_PYTHON = ((3, 8), (3, 11))
_PIP_TIMEOUT_S = 1800


def venv_dir(name: str) -> Path:
    if name not in VENV_REQUIREMENTS:
        raise PeerVenvError(f"unknown peers venv {name!r}; known: {', '.join(VENV_REQUIREMENTS)}")
    return PEERS_VENV_ROOT / name


def venv_python(name: str) -> Path:
    return venv_dir(name) / "bin" / "python"


def peer_env(name: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a peer subprocess: the venv's bin/ first on PATH.

    PyFlink starts its Python workers as ``python`` from PATH, so without this the
    workers would run in whatever interpreter comes first and miss pyflink.
    """
    venv = venv_dir(name)
    env = dict(os.environ if base is None else base)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    env.pop("PYTHONHOME", None)
    env.pop("PYTHONPATH", None)  # the peers import nothing from this repo
    return env


def _read_stamp(venv: Path) -> dict[str, Any] | None:
    try:
        return json.loads((venv / _STAMP_NAME).read_text())
    except (OSError, ValueError):
        return None


def _base_python() -> str:
    """A CPython of a version PyFlink supports: this interpreter's base install."""
    if not (_SUPPORTED_PYTHON[0] <= sys.version_info[:2] <= _SUPPORTED_PYTHON[1]):
        raise PeerVenvError(
            f"the peers venv needs Python {_SUPPORTED_PYTHON[0]}..{_SUPPORTED_PYTHON[1]} "
            f"(apache-flink 1.20), this is {sys.version.split()[0]}"
        )
    return getattr(sys, "_base_executable", sys.executable)


def _run(cmd: list[str], timeout_s: float, env: dict[str, str] | None = None) -> str:
    logger.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                          env=None if env is None else {**os.environ, **env})
    if proc.returncode != 0:
        raise PeerVenvError(f"{' '.join(cmd[:4])} ... failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout


def _build(name: str, venv: Path, requirements: tuple[str, ...]) -> dict[str, Any]:
    if venv.exists():
        shutil.rmtree(venv)
    started = time.monotonic()
    _run([_base_python(), "-m", "venv", str(venv)], 300)
    python = str(venv / "bin" / "python")
    _run([python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"], 600)
    install_started = time.monotonic()
    _run([python, "-m", "pip", "install", "--quiet", *requirements], _PIP_TIMEOUT_S, env=_PIP_ENV.get(name))
    install_seconds = time.monotonic() - install_started
    site_packages = next((venv / "lib").glob("python3.*/site-packages"))
    jars = flink_agents_jars.install_jars(site_packages) if name == "flink03" else None
    frozen = json.loads(_run([python, "-m", "pip", "list", "--format", "json"], 120))
    versions = {item["name"].lower(): item["version"] for item in frozen}
    stamp = {
        "requirements": list(requirements),
        "python": _run([python, "-c", "import sys; print(sys.version.split()[0])"], 60).strip(),
        "pip_install_seconds": round(install_seconds, 1),
        "total_build_seconds": round(time.monotonic() - started, 1),
        "site_packages_mb": round(_tree_bytes(site_packages) / 1e6),
        "largest_packages_mb": _largest_dirs(site_packages, 8),
        "versions": versions,
    }
    if jars is not None:
        stamp["flink_agents_jars"] = jars
    (venv / _STAMP_NAME).write_text(json.dumps(stamp, indent=2, sort_keys=True))
    return stamp


def _tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _largest_dirs(site_packages: Path, n: int) -> dict[str, int]:
    sizes = {d.name: _tree_bytes(d) for d in site_packages.iterdir() if d.is_dir() and not d.name.endswith("-info")}
    top = sorted(sizes.items(), key=lambda item: item[1], reverse=True)[:n]
    return {name: round(size / 1e6) for name, size in top}


def _complete(name: str, venv: Path) -> bool:
    """Whether what pip does not install is there too (flink03's jars)."""
    if name != "flink03":
        return True
    return any(flink_agents_jars.jars_present(sp) for sp in (venv / "lib").glob("python3.*/site-packages"))


def ensure_venv(name: str, force: bool = False) -> dict[str, Any]:
    """Return the named venv's stamp, building the venv first when it is missing or stale.

    A file lock serialises concurrent callers (two harness runs starting at once).
    """
    venv = venv_dir(name)
    requirements = VENV_REQUIREMENTS[name]
    PEERS_VENV_ROOT.mkdir(parents=True, exist_ok=True)
    with open(PEERS_VENV_ROOT / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = _read_stamp(venv)
        if not force and stamp is not None and stamp.get("requirements") == list(requirements) \
                and venv_python(name).exists() and _complete(name, venv):
            return stamp
        logger.info("building the peers venv %s at %s (a minute or more)", name, venv)
        return _build(name, venv, requirements)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="rebuild even if the stamp is current")
    parser.add_argument("names", nargs="*", default=list(VENV_REQUIREMENTS),
                        help="which venvs (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stamps = {name: ensure_venv(name, force=args.force) for name in args.names}
    print(json.dumps(stamps, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
