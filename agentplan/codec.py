"""JSON codec for values that cross a persistence boundary (memory, events, journal).

Pydantic models are tagged with their import path so they come back as the same type
after a restart; anything that is not JSON-like is rejected early with a clear error.
"""

from __future__ import annotations

import enum
import importlib
import json
from typing import Any

import orjson
from pydantic import BaseModel

from agentplan.exceptions import SerializationError
from agentplan.fastmodel import is_model_class

MODEL_TAG = "__model__"
CLASS_TAG = "__class__"
_JSON_SCALARS = (str, int, float, bool, type(None))
_class_cache: dict[str, type] = {}
# One encoder for all compact dumps: json.dumps with non-default arguments builds a new encoder per
# call, which costs more than encoding a small state.
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def import_path(obj: Any) -> str:
    """``module:qualname`` of a class or function, used to find it again on restore."""
    return f"{obj.__module__}:{obj.__qualname__}"


_MODEL_DUMP = BaseModel.model_dump
_model_paths: dict[type, str] = {}  # import_path of the model classes encode() has tagged


def _model_path(cls: type) -> str:
    path = _model_paths.get(cls)
    if path is None:
        path = _model_paths[cls] = import_path(cls)
    return path


def resolve_path(path: str) -> Any:
    """Import ``module:qualname`` (or dotted ``module.name``)."""
    cached = _class_cache.get(path)
    if cached is not None:
        return cached
    if ":" in path:
        module_name, _, qualname = path.partition(":")
    else:
        module_name, _, qualname = path.rpartition(".")
    if not module_name or not qualname:
        raise SerializationError(f"not an import path: {path!r} (expected 'module:Name')")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise SerializationError(f"cannot import module {module_name!r} for {path!r}: {exc}") from exc
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise SerializationError(f"{module_name!r} has no attribute path {qualname!r}") from exc
    _class_cache[path] = obj
    return obj


def check_storable(value: Any, where: str = "value") -> None:
    """Raise :class:`TypeError`-compatible error unless ``value`` is JSON-like or pydantic."""
    if isinstance(value, _JSON_SCALARS) or is_model_class(type(value)):
        if isinstance(value, float) and value != value:  # NaN is not JSON
            raise SerializationError(f"{where}: NaN cannot be stored")
        return
    if isinstance(value, enum.Enum):
        return
    if isinstance(value, type) and issubclass(value, BaseModel):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_storable(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, item in value.items():
            if not isinstance(k, str):
                raise SerializationError(f"{where}: dict keys must be str, got {type(k).__name__}")
            check_storable(item, f"{where}.{k}")
        return
    raise SerializationError(
        f"{where}: {type(value).__name__} is not storable; use JSON-like values "
        "(str, int, float, bool, None, list, dict) or a pydantic model"
    )


def encode(value: Any) -> Any:
    """Turn a storable value into plain JSON data, tagging pydantic models."""
    if isinstance(value, _JSON_SCALARS):
        return value
    if is_model_class(type(value)):
        # model_dump(mode="json") with its defaults, minus its Python wrapper (a journaled model call's result
        # is encoded per call); a class that overrides model_dump gets its override.
        dumped = value.__pydantic_serializer__.to_python(value, mode="json") \
            if type(value).model_dump is _MODEL_DUMP else value.model_dump(mode="json")
        return {MODEL_TAG: _model_path(type(value)), "value": dumped}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, type) and issubclass(value, BaseModel):
        return {CLASS_TAG: import_path(value)}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    raise SerializationError(f"{type(value).__name__} is not storable")


def decode(data: Any) -> Any:
    """Inverse of :func:`encode`."""
    if isinstance(data, list):
        return [decode(v) for v in data]
    if isinstance(data, dict):
        tag = data.get(MODEL_TAG)
        if tag is not None and len(data) == 2 and "value" in data:
            cls = resolve_path(tag)
            if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
                raise SerializationError(f"{tag!r} is not a pydantic model class")
            return cls.model_validate(data["value"])
        cls_tag = data.get(CLASS_TAG)
        if cls_tag is not None and len(data) == 1:
            cls = resolve_path(cls_tag)
            if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
                raise SerializationError(f"{cls_tag!r} is not a pydantic model class")
            return cls
        return {k: decode(v) for k, v in data.items()}
    return data


def dump_json(data: Any) -> bytes:
    """Compact UTF-8 JSON of plain JSON data (every key's state, at every checkpoint).

    orjson writes the same bytes as the standard encoder for our data, ~10x faster; what it refuses
    (integers past 64 bits, non-str keys, unencodable strings) goes through the standard encoder.
    """
    try:
        return orjson.dumps(data)
    except TypeError:
        return _COMPACT.encode(data).encode()


def dumps(value: Any) -> bytes:
    return dump_json(encode(value))


def loads(raw: bytes | str) -> Any:
    return decode(json.loads(raw))
