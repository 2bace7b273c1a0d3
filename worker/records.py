"""Input decoding, output encoding and dead-letter records.

Every way an input can be unusable has a reason code that goes into the DLQ headers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, cast

from pydantic import BaseModel, ValidationError

HEADER_PREFIX = "agentfleet."
MAX_HEADER_TEXT = 1024  # error messages are truncated so DLQ headers never carry whole payloads
MAX_JSON_DEPTH = 64
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class DecodeFailure(Exception):
    """An input that cannot become an InputEvent; ``reason`` is the DLQ reason code."""

    def __init__(self, reason: str, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.cause = cause


#: The engine's key for a record: its partition (state lives per partition) and its Kafka key.
EngineKey = tuple[int, bytes]


def describe_key(engine_key: Any) -> str:
    """An engine key as its user knows it, for log lines: the record key, and the partition it lives on."""
    partition, key = cast(EngineKey, engine_key)
    return f"{key.decode('utf-8', 'replace')!r} (partition {partition})"


def user_key(engine_key: Any) -> str:
    """An engine key as the record key its user wrote (what budget key prefixes match)."""
    return cast(EngineKey, engine_key)[1].decode("utf-8", "replace")


def position(message: Any) -> tuple[str, int, int]:
    """Topic, partition and offset of a consumed record (set on every record; only error events lack them)."""
    return cast(str, message.topic()), cast(int, message.partition()), cast(int, message.offset())


@dataclass(slots=True)
class RecordMeta:
    """Where an input came from; travels with its run to the commit."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes
    traceparent: bytes | None = None  # W3C trace context it arrived with, carried to what its run produces
    tracestate: bytes | None = None
    run_span: Any = None  # the span context of its run, when traced (worker/observability/tracing.py)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)  # NaN and Infinity are not JSON


def _has_lone_surrogate(data: Any) -> bool:
    """JSON may escape half a UTF-16 pair (``"\\ud800"``); such a string has no UTF-8 form, so its output,
    state and DLQ copy could never be written."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _depth(value: Any, limit: int) -> int:
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


class InputDecoder:
    """bytes -> the agent's input value (a pydantic model instance or plain JSON data)."""

    def __init__(self, input_model: type[BaseModel] | None, max_bytes: int, key_field: str | None = None) -> None:
        self.input_model = input_model
        self.max_bytes = max_bytes
        self.key_field = key_field

    def decode(self, key: bytes | None, value: bytes | None) -> tuple[bytes, Any]:
        if value is None or len(value) == 0:
            raise DecodeFailure("empty", "record has no value")
        if len(value) > self.max_bytes:
            raise DecodeFailure("oversized", f"value is {len(value)} bytes; max-record-bytes is {self.max_bytes}")
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeFailure("invalid-utf8", f"value is not UTF-8: {exc}", exc) from exc
        try:
            data = _DECODER.decode(text)
        except (ValueError, RecursionError) as exc:  # ValueError: also integers too long for int()
            raise DecodeFailure("invalid-json", f"value is not JSON: {exc}", exc) from exc
        if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(data):
            raise DecodeFailure("invalid-utf8", "value escapes an unpaired UTF-16 surrogate (\\ud800-\\udfff), "
                                "which has no UTF-8 form")
        # Nesting needs an opening bracket per level: counting them (in C) spares the walk for
        # nearly every record.
        if text.count("{") + text.count("[") > MAX_JSON_DEPTH and _depth(data, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
            raise DecodeFailure("too-deep", f"JSON nesting exceeds {MAX_JSON_DEPTH} levels")
        if not key:
            if self.key_field and isinstance(data, dict) and data.get(self.key_field) not in (None, ""):
                key = str(data[self.key_field]).encode()
            else:
                hint = f" and has no '{self.key_field}' field" if self.key_field else "; set --key-field"
                raise DecodeFailure("null-key", f"record has no key{hint}")
        if self.input_model is not None:
            try:
                data = self.input_model.model_validate(data)
            except ValidationError as exc:
                raise DecodeFailure("schema-invalid", f"does not match {self.input_model.__name__}: "
                                    f"{exc.errors(include_url=False, include_input=False)}", exc) from exc
        return key, data


_MODEL_DUMP_JSON = BaseModel.model_dump_json


def encode_output(value: Any) -> bytes:
    if isinstance(value, BaseModel):
        # model_dump_json() with its defaults, as bytes: spares its str decode and our encode back, per output
        # (a class that overrides model_dump_json gets its override).
        if type(value).model_dump_json is _MODEL_DUMP_JSON:
            return value.__pydantic_serializer__.to_json(value)
        return value.model_dump_json().encode()
    return json.dumps(value, ensure_ascii=False, default=_default).encode()


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return str(value)


def truncate(text: str, limit: int = MAX_HEADER_TEXT) -> bytes:
    """UTF-8 of ``text``, cut to at most ``limit`` bytes (ending in "...") on a character boundary."""
    data = text.encode("utf-8", "backslashreplace")
    if len(data) <= limit:
        return data
    return data[: limit - 3].decode("utf-8", "ignore").encode() + b"..."


_SOURCE_TOPIC = HEADER_PREFIX + "source.topic"
_SOURCE_PARTITION = HEADER_PREFIX + "source.partition"
_SOURCE_OFFSET = HEADER_PREFIX + "source.offset"


class SourceHeaders:
    """:func:`source_headers` for the records of one transaction: what they share is encoded once."""

    __slots__ = ("_app", "_txn", "_topics")

    def __init__(self, app_id: str, txn: str) -> None:
        self._app = (HEADER_PREFIX + "app.id", app_id.encode())
        self._txn = (HEADER_PREFIX + "txn", txn.encode())
        self._topics: dict[str, tuple[str, bytes]] = {}

    def __call__(self, meta: RecordMeta) -> list[tuple[str, bytes]]:
        topic = self._topics.get(meta.topic)
        if topic is None:
            topic = self._topics[meta.topic] = (_SOURCE_TOPIC, meta.topic.encode())
        headers = [topic, (_SOURCE_PARTITION, str(meta.partition).encode()),
                   (_SOURCE_OFFSET, str(meta.offset).encode()), self._app, self._txn]
        if meta.traceparent is not None:
            headers.append(("traceparent", meta.traceparent))
            if meta.tracestate is not None:
                headers.append(("tracestate", meta.tracestate))
        return headers


def source_headers(meta: RecordMeta, app_id: str, txn: str) -> list[tuple[str, bytes]]:
    return SourceHeaders(app_id, txn)(meta)


def trace_context(headers: Any) -> tuple[bytes | None, bytes | None]:
    """The W3C ``traceparent`` and ``tracestate`` headers of a consumed record (None when absent)."""
    parent = state = None
    for name, value in headers:
        if name == "traceparent":
            parent = value
        elif name == "tracestate":
            state = value
    return parent, state


def failure_reason(error: BaseException) -> str:
    """The DLQ reason of a failed run: its error's ``dlq_reason`` (e.g. ``budget-exceeded``), else ``run-failed``."""
    reason = getattr(error, "dlq_reason", None)
    return reason if isinstance(reason, str) else "run-failed"


def dlq_headers(meta: RecordMeta, app_id: str, txn: str, reason: str,
                error: BaseException) -> list[tuple[str, bytes]]:
    return source_headers(meta, app_id, txn) + [
        (HEADER_PREFIX + "dlq.reason", reason.encode()),
        (HEADER_PREFIX + "dlq.exception", type(error).__name__.encode()),
        (HEADER_PREFIX + "dlq.error", truncate(str(error))),
    ]
