"""Skills: directories holding a ``SKILL.md`` (YAML front matter ``name``, ``description``, ...; then
instructions for the model), found in local directories, installed packages or zip archives at URLs.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import re
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, PrivateAttr, field_validator

from agentplan.exceptions import ResourceError
from agentplan.resources import ResourceType

SKILL_FILE = "SKILL.md"
_NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)
#: Largest zip archive :meth:`Skills.from_url` downloads, and the most it may unpack to.
MAX_ARCHIVE_BYTES = 50 * 2**20
URL_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Skill:
    """One skill: its directory and what its ``SKILL.md`` front matter says."""

    name: str
    description: str
    directory: Path
    metadata: dict[str, Any] = field(default_factory=dict)


class SkillSourceSpec(BaseModel):
    """Where skills come from: ``scheme`` is ``local`` (``path``), ``package`` (``package``,
    ``resource``) or ``url`` (``url``)."""

    model_config = ConfigDict(frozen=True)

    scheme: str
    params: dict[str, str]

    @field_validator("scheme")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        value = value.lower()
        if value not in ("local", "package", "url"):
            raise ValueError(f"unknown skill source scheme {value!r} (local, package or url)")
        return value


class Skills(BaseModel):
    """A skills resource (``@skills``): where to find skill directories."""

    resource_type: ClassVar[ResourceType] = ResourceType.SKILLS
    sources: list[SkillSourceSpec]
    _loaded: dict[str, Skill] | None = PrivateAttr(None)

    @classmethod
    def from_local_dir(cls, *paths: str | os.PathLike[str]) -> Skills:
        """Each path is a skill directory, or a directory whose subdirectories are skills."""
        return cls(sources=[SkillSourceSpec(scheme="local", params={"path": str(p)}) for p in paths])

    @classmethod
    def from_package(cls, *pairs: tuple[str, str]) -> Skills:
        """``(package, resource)`` pairs: a directory shipped inside an installed package."""
        return cls(sources=[SkillSourceSpec(scheme="package", params={"package": p, "resource": r})
                            for p, r in pairs])

    @classmethod
    def from_url(cls, *urls: str) -> Skills:
        """Zip archives of skill directories, downloaded once into a cache directory."""
        return cls(sources=[SkillSourceSpec(scheme="url", params={"url": u}) for u in urls])

    def load(self) -> dict[str, Skill]:
        """Every skill of every source by name (read once); a name found twice is an error."""
        if self._loaded is not None:
            return self._loaded
        found: dict[str, Skill] = {}
        for source in self.sources:
            for skill in _skills_in(_source_dir(source)):
                if skill.name in found:
                    raise ResourceError(f"skill {skill.name!r} is defined twice: {found[skill.name].directory} "
                                        f"and {skill.directory}")
                found[skill.name] = skill
        self._loaded = found
        return found


def merge(all_skills: list[Skills]) -> Skills:
    return Skills(sources=[source for s in all_skills for source in s.sources])


def _source_dir(source: SkillSourceSpec) -> Path:
    params = source.params
    if source.scheme == "local":
        path = Path(params["path"]).expanduser()
    elif source.scheme == "package":
        try:
            traversable = importlib.resources.files(params["package"]).joinpath(params["resource"])
        except ModuleNotFoundError as exc:
            raise ResourceError(f"skills package {params['package']!r} is not installed") from exc
        path = Path(str(traversable))
        if not path.is_dir():
            raise ResourceError(f"skills resource {params['resource']!r} of package {params['package']!r} is not a "
                                "directory on the file system")
    else:
        path = _download(params["url"])
    if not path.is_dir():
        raise ResourceError(f"skills directory {path} does not exist")
    return path.resolve()


def _skills_in(directory: Path) -> list[Skill]:
    if (directory / SKILL_FILE).is_file():
        return [read_skill(directory)]
    skills = [read_skill(child) for child in sorted(directory.iterdir()) if (child / SKILL_FILE).is_file()]
    if not skills:
        raise ResourceError(f"no skills in {directory}: neither it nor a subdirectory has a {SKILL_FILE}")
    return skills


def read_skill(directory: Path) -> Skill:
    """Parse ``directory/SKILL.md``; a missing or bad field is an error naming file and field."""
    path = directory / SKILL_FILE
    text = path.read_text(encoding="utf-8")
    match = _FRONT_MATTER.match(text)
    if match is None:
        raise ResourceError(f"{path}: no YAML front matter (a '---' block with name and description)")
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        raise ResourceError(f"{path}: front matter is not valid YAML: {exc}") from exc
    if not isinstance(meta, dict):
        raise ResourceError(f"{path}: front matter must be a mapping")
    name, description = meta.get("name"), meta.get("description")
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > 64:
        raise ResourceError(f"{path}: 'name' must be lowercase letters, digits and hyphens (at most 64), "
                            f"got {name!r}")
    if not isinstance(description, str) or not description.strip():
        raise ResourceError(f"{path}: 'description' is missing or empty")
    return Skill(name=name, description=" ".join(description.split()), directory=directory.resolve(),
                 metadata={k: v for k, v in meta.items() if k not in ("name", "description")})


def _download(url: str) -> Path:
    """Unpack the zip at ``url`` into a per-URL cache directory (once), refusing paths that escape it."""
    if not url.startswith(("http://", "https://")):
        raise ResourceError(f"skills URL must be http(s): {url!r}")
    cache = Path(os.environ.get("AGENTPLAN_SKILLS_CACHE", Path(tempfile.gettempdir()) / "agentplan-skills"))
    target = cache / hashlib.sha256(url.encode()).hexdigest()[:24]
    if target.is_dir():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cache))
    try:
        archive = staging / "skills.zip"
        with urllib.request.urlopen(url, timeout=URL_TIMEOUT_S) as response, archive.open("wb") as out:  # noqa: S310
            copied = 0
            while chunk := response.read(65536):
                copied += len(chunk)
                if copied > MAX_ARCHIVE_BYTES:
                    raise ResourceError(f"skills archive {url} is larger than {MAX_ARCHIVE_BYTES} bytes")
                out.write(chunk)
        unpacked = staging / "skills"
        with zipfile.ZipFile(archive) as zipped:
            if sum(info.file_size for info in zipped.infolist()) > MAX_ARCHIVE_BYTES:
                raise ResourceError(f"skills archive {url} unpacks to more than {MAX_ARCHIVE_BYTES} bytes")
            for info in zipped.infolist():
                destination = (unpacked / info.filename).resolve()
                if not destination.is_relative_to(unpacked.resolve()):
                    raise ResourceError(f"skills archive {url}: entry {info.filename!r} escapes the archive")
            zipped.extractall(unpacked)
        os.replace(unpacked, target)  # atomic: concurrent loaders see all or nothing
    except (OSError, zipfile.BadZipFile) as exc:
        if target.is_dir():  # another process unpacked it first
            return target
        raise ResourceError(f"cannot fetch skills from {url}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
