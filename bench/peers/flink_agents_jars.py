"""The Flink jars flink-agents 0.3.1's Python package loads, put into its installed package.

From 0.2 on, flink-agents ships as an sdist whose wheel build downloads its jars from Maven
Central (``jar_manifest.json`` in the sdist). ``AgentsExecutionEnvironment`` adds
``flink_agents/lib/common/*.jar`` (shared dependencies) and ``flink_agents/lib/flink-<major>/*.jar``
(the thin jar for the PyFlink in use) to the job. The peers venv installs the package with that
download switched off and puts the two jars this benchmark needs (common + Flink 1.20) in place:

1. from Maven Central, checked against the SHA-256 the 0.3.1 sdist's manifest lists;
2. failing that (a Maven Central mirror without them), built with Maven from the source release:
   ``FLINK_AGENTS_SOURCE`` names a checkout of apache/flink-agents at tag ``release-0.3.1``; a copy
   of it builds ``dist/common`` and ``dist/flink-1.20`` as upstream's ``tools/build.sh`` does, but
   without the Java integrations (Java chat models, embedding models, vector stores, MCP), which
   a Python agent using a Python chat model never loads and whose pinned versions such a mirror
   tends to lack too. ``FLINK_AGENTS_MAVEN_ARGS`` adds Maven arguments, e.g.
   ``-Dfluss.version=0.9.1-incubating`` where the mirror lacks the pinned Fluss client.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.peers.exceptions import PeerVenvError

__all__ = ["FLINK_AGENTS_VERSION", "JARS", "SOURCE_ENV", "install_jars", "jars_present"]

logger = logging.getLogger(__name__)

FLINK_AGENTS_VERSION = "0.3.1"
SOURCE_ENV = "FLINK_AGENTS_SOURCE"
MAVEN_ARGS_ENV = "FLINK_AGENTS_MAVEN_ARGS"
MAVEN_CENTRAL = "https://repo1.maven.org/maven2/org/apache/flink"
_MAVEN_TIMEOUT_S = 3600


@dataclass(frozen=True)
class Jar:
    artifact: str
    classifier: str | None
    lib_dir: str  # under flink_agents/lib/
    sha256: str  # as listed in the 0.3.1 sdist's jar_manifest.json
    source_module: str  # the Maven module that builds it

    @property
    def file_name(self) -> str:
        suffix = f"-{self.classifier}" if self.classifier else ""
        return f"{self.artifact}-{FLINK_AGENTS_VERSION}{suffix}.jar"

    @property
    def url(self) -> str:
        return f"{MAVEN_CENTRAL}/{self.artifact}/{FLINK_AGENTS_VERSION}/{self.file_name}"


JARS = (
    Jar("flink-agents-dist-common", None, "common",
        "0e7706e965ca671e8618a29b77e6d64eaa9bfcfa70fd2c63d257c49e1f42db2c", "dist/common"),
    Jar("flink-agents-dist-flink-1.20", "thin", "flink-1.20",
        "78c62e6a31b5be28c186a9828ed6c08d72daae96b388ab1ebc8776d1527eeb21", "dist/flink-1.20"),
)


def _lib(site_packages: Path) -> Path:
    return site_packages / "flink_agents" / "lib"


def jars_present(site_packages: Path) -> bool:
    return all((_lib(site_packages) / jar.lib_dir / jar.file_name).is_file() for jar in JARS)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(jar: Jar, dest: Path) -> bool:
    """True when the jar came from Maven Central with the expected checksum; False when Central lacks it."""
    partial = dest.with_suffix(".part")
    try:
        with urllib.request.urlopen(jar.url, timeout=120) as response, partial.open("wb") as out:
            shutil.copyfileobj(response, out)
    except urllib.error.HTTPError as exc:
        partial.unlink(missing_ok=True)
        if exc.code == 404:
            return False
        raise PeerVenvError(f"downloading {jar.url}: HTTP {exc.code}") from exc
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise PeerVenvError(f"downloading {jar.url}: {exc}") from exc
    actual = _sha256(partial)
    if actual != jar.sha256:
        partial.unlink()
        raise PeerVenvError(f"{jar.url}: SHA-256 {actual}, the 0.3.1 manifest lists {jar.sha256}")
    partial.rename(dest)
    return True


_INTEGRATION_DEPENDENCY = re.compile(
    r"\s*<dependency>\s*<groupId>org\.apache\.flink</groupId>\s*"
    r"<artifactId>flink-agents-integrations-[^<]+</artifactId>.*?</dependency>", re.DOTALL)


def without_java_integrations(dist_pom: str) -> str:
    """dist/pom.xml's text without its dependencies on the Java integration modules."""
    stripped = _INTEGRATION_DEPENDENCY.sub("", dist_pom)
    if stripped == dist_pom:
        raise PeerVenvError("dist/pom.xml: no flink-agents-integrations dependency found (not the 0.3.1 layout?)")
    return stripped


def _build_from_source(source: Path, work: Path) -> dict[str, Path]:
    """Build the dist jars from a copy of a flink-agents source checkout; returns file name -> built jar."""
    pom = source / "pom.xml"
    if not pom.is_file():
        raise PeerVenvError(f"{SOURCE_ENV}={source}: no pom.xml there (a checkout of apache/flink-agents is needed)")
    if f"<version>{FLINK_AGENTS_VERSION}</version>" not in pom.read_text(encoding="utf-8"):
        raise PeerVenvError(f"{SOURCE_ENV}={source}: not version {FLINK_AGENTS_VERSION} "
                            f"(check out the tag release-{FLINK_AGENTS_VERSION})")
    if shutil.which("mvn") is None:
        raise PeerVenvError(f"{SOURCE_ENV} is set but mvn is not on PATH (Maven 3 and a JDK 11+ are needed)")
    tree = work / "flink-agents"
    shutil.copytree(source, tree, ignore=shutil.ignore_patterns(".git", "target"))
    dist_pom = tree / "dist" / "pom.xml"
    dist_pom.write_text(without_java_integrations(dist_pom.read_text(encoding="utf-8")), encoding="utf-8")
    command = ["mvn", "-B", "-q", "-pl", ",".join(jar.source_module for jar in JARS), "-am",
               "-Dmaven.test.skip=true", "-Dspotless.check.skip=true", "-Dspotless.apply.skip=true",
               "-Drat.skip=true", *shlex.split(os.environ.get(MAVEN_ARGS_ENV, "")), "package"]
    logger.info("building the Flink Agents %s jars in %s: %s", FLINK_AGENTS_VERSION, tree, " ".join(command))
    proc = subprocess.run(command, cwd=tree, capture_output=True, text=True, timeout=_MAVEN_TIMEOUT_S)
    if proc.returncode != 0:
        raise PeerVenvError(f"mvn package in {tree} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}")
    built = {jar.file_name: tree / jar.source_module / "target" / jar.file_name for jar in JARS}
    missing = [str(path) for path in built.values() if not path.is_file()]
    if missing:
        raise PeerVenvError(f"mvn package in {tree} did not produce {missing}")
    return built


def install_jars(site_packages: Path) -> dict[str, Any]:
    """Put the jars into the installed flink_agents package; returns where each came from."""
    if not (site_packages / "flink_agents").is_dir():
        raise PeerVenvError(f"flink_agents is not installed in {site_packages}")
    provenance: dict[str, Any] = {}
    missing: list[Jar] = []
    for jar in JARS:
        dest_dir = _lib(site_packages) / jar.lib_dir
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / jar.file_name
        if dest.is_file() or _download(jar, dest):
            provenance[jar.file_name] = {"source": jar.url, "sha256": _sha256(dest)}
        else:
            missing.append(jar)
    if missing:
        source = os.environ.get(SOURCE_ENV)
        if not source:
            raise PeerVenvError(
                f"Maven Central has no {', '.join(j.file_name for j in missing)}; set {SOURCE_ENV} to a checkout of "
                f"apache/flink-agents at tag release-{FLINK_AGENTS_VERSION} to build them with Maven")
        with tempfile.TemporaryDirectory(prefix="flink-agents-build-") as work:
            built = _build_from_source(Path(source).resolve(), Path(work))
            for jar in missing:
                dest = _lib(site_packages) / jar.lib_dir / jar.file_name
                shutil.copyfile(built[jar.file_name], dest)
                provenance[jar.file_name] = {
                    "source": f"built from {source} without the Java integrations",
                    "maven_args": os.environ.get(MAVEN_ARGS_ENV, ""), "sha256": _sha256(dest)}
    return provenance
