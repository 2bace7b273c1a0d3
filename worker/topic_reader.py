"""``agentfleet consume``: read committed records from chosen partitions and offsets, print them faithfully.

A value is shown as what it is: JSON as JSON, other UTF-8 text as text, anything else as base64,
and an empty value apart from a null one (a DLQ holds all of these). Without ``--follow`` the
reader stops once every chosen partition is at its end; with it, at ``--max`` or Ctrl-C.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, Message, TopicPartition

from worker.exceptions import ConfigurationError
from worker.kafka.admin import TopicAdmin
from worker.kafka.properties import consumer_properties

__all__ = ["FORMATS", "ReadPlan", "as_json", "check_format", "parse_offset", "read_topic", "render"]

FORMATS = ("json", "raw", "base64")
_TEMPLATE = re.compile(r"%([kvhpotT%])")


@dataclass(frozen=True)
class ReadPlan:
    topic: str
    offset: str = "latest"          # earliest | latest | N | -N
    partitions: tuple[int, ...] = ()  # empty: all
    key: str | None = None
    max_records: int | None = None
    follow: bool = False
    idle_timeout_s: float | None = None  # stop after this long without records (None: never)


def parse_offset(value: str) -> str:
    """Validate ``--offset``: earliest, latest, an offset N, or -N (N before each partition's end)."""
    text = value.strip().lower()
    if text in ("earliest", "latest") or re.fullmatch(r"-?\d+", text):
        return text
    raise ConfigurationError("offset", f"expected earliest, latest, N or -N, got {value!r}")


def _start_offsets(consumer: Consumer, topic: str, partitions: list[int], offset: str) -> list[TopicPartition]:
    if offset == "earliest":
        return [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
    if offset == "latest":
        return [TopicPartition(topic, p, OFFSET_END) for p in partitions]
    number = int(offset)
    if number >= 0:
        return [TopicPartition(topic, p, number) for p in partitions]
    starts = []
    for p in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        starts.append(TopicPartition(topic, p, max(low, high + number)))
    return starts


def read_topic(bootstrap: str, plan: ReadPlan, config: dict[str, Any]) -> Iterator[Message]:
    """Committed records of ``plan.topic`` (read_committed), filtered by key, in arrival order."""
    admin = TopicAdmin(bootstrap, config, timeout_s=10)
    admin.check_reachable()
    count = admin.partitions(plan.topic)
    if count is None:
        raise ConfigurationError("topic", f"topic {plan.topic!r} does not exist")
    chosen = list(plan.partitions) or list(range(count))
    if unknown := [p for p in chosen if not 0 <= p < count]:
        raise ConfigurationError("partition", f"{plan.topic!r} has partitions 0-{count - 1}, not {unknown}")
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"agentfleet-consume-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "isolation.level": "read_committed",
                         "fetch.wait.max.ms": 10, "enable.partition.eof": True, **consumer_properties(config)})
    key = plan.key.encode() if plan.key is not None else None
    try:
        consumer.assign(_start_offsets(consumer, plan.topic, chosen, plan.offset))
        at_end: set[int] = set()
        seen = 0
        last = time.monotonic()
        while plan.max_records is None or seen < plan.max_records:
            if not plan.follow and len(at_end) == len(chosen):
                return
            if plan.idle_timeout_s is not None and time.monotonic() - last > plan.idle_timeout_s:
                return
            for msg in consumer.consume(num_messages=100, timeout=0.2):
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        at_end.add(msg.partition() or 0)
                        continue
                    raise ConfigurationError("topic", f"{plan.topic}: {error.str()}")
                at_end.discard(msg.partition() or 0)
                last = time.monotonic()
                if key is not None and msg.key() != key:
                    continue
                seen += 1
                yield msg
                if plan.max_records is not None and seen >= plan.max_records:
                    return
    finally:
        consumer.close()


def _text_or_base64(data: bytes | None, name: str) -> dict[str, Any]:
    if data is None:
        return {name: None}
    try:
        return {f"{name}_text" if name == "value" else name: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{name}_base64": base64.b64encode(data).decode()}


def _value_fields(value: bytes | None) -> dict[str, Any]:
    if value:
        try:
            return {"value": json.loads(value)}
        except (ValueError, UnicodeDecodeError):
            pass
    return _text_or_base64(value, "value")


def _headers(msg: Message) -> list[tuple[str, bytes | None]]:
    # confluent-kafka's stubs allow a dict and str values; a consumed record has a list of bytes values.
    raw = msg.headers() or []
    items = list(raw.items()) if isinstance(raw, dict) else list(raw)
    return [(str(name), value.encode() if isinstance(value, str) else value) for name, value in items]


def as_json(msg: Message) -> dict[str, Any]:
    """One record as a JSON object; key and header values as text, or ``*_base64`` when not UTF-8."""
    headers = {}
    for name, value in _headers(msg):
        shown = _text_or_base64(value, "h")
        headers[name] = shown["h"] if "h" in shown else {"base64": shown["h_base64"]}
    return {"partition": msg.partition(), "offset": msg.offset(), "timestamp": msg.timestamp()[1],
            **_text_or_base64(msg.key(), "key"), "headers": headers, **_value_fields(msg.value())}


def render(msg: Message, fmt: str) -> bytes:
    """``json``, ``raw`` (the value's bytes), ``base64`` (of the value), or a kcat-like template."""
    if fmt == "json":
        return json.dumps(as_json(msg), ensure_ascii=False).encode()
    if fmt == "raw":
        return msg.value() or b""
    if fmt == "base64":
        return base64.b64encode(msg.value() or b"")
    return _TEMPLATE.sub(lambda m: _field(msg, m.group(1)), fmt.replace("\\n", "\n").replace("\\t", "\t")
                         ).encode("utf-8", "surrogateescape")


def _field(msg: Message, code: str) -> str:
    def text(data: bytes | None) -> str:
        return "" if data is None else data.decode("utf-8", "surrogateescape")

    return {
        "k": lambda: text(msg.key()),
        "v": lambda: text(msg.value()),
        "h": lambda: ",".join(f"{k}={text(v)}" for k, v in _headers(msg)),
        "p": lambda: str(msg.partition()),
        "o": lambda: str(msg.offset()),
        "T": lambda: str(msg.timestamp()[1]),
        "t": lambda: msg.topic() or "",
        "%": lambda: "%",
    }[code]()


def check_format(fmt: str) -> str:
    if fmt in FORMATS or "%" in fmt:
        return fmt
    raise ConfigurationError("format", f"expected json, raw, base64 or a template like '%k %v %p %o', got {fmt!r}")
