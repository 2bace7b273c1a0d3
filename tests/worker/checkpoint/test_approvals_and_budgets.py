"""What a checkpoint produces for parked runs' requests and budget refusals (fake producer; the broker
side is in tests/worker/integration/test_approvals.py and test_budgets.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from agentplan import KeyDelta
from agentplan.budgets import BudgetExceeded
from tests.worker.checkpoint.test_checkpointer import TOPICS, FakeProducer, meta
from worker.checkpoint.checkpoint import ApprovalsOff, Checkpoint
from worker.records import HEADER_PREFIX


def parked(partition: int) -> KeyDelta:
    return KeyDelta(key=(partition, b"k"), state=b"s", version=1,
                    requests=[(meta(4, partition), {"request_id": "r1", "key": "k", "request": {"refund": 3}})])


def test_a_parked_runs_request_goes_to_the_approvals_topic_on_the_keys_partition() -> None:
    producer = FakeProducer()
    Checkpoint("t#1", [parked(2)], [], [], {}, replace(TOPICS, approvals="app-approvals")).produce(producer)
    ((topic, key, value, partition),) = [p for p in producer.produced if p[0] == "app-approvals"]
    assert (key, partition) == (b"k", 2)
    assert json.loads(value) == {"request_id": "r1", "key": "k", "request": {"refund": 3}, "partition": 2}


def test_a_request_without_approvals_stops_the_worker_naming_the_flag() -> None:
    with pytest.raises(ApprovalsOff, match="--approvals"):
        Checkpoint("t#1", [parked(0)], [], [], {}, TOPICS).produce(FakeProducer())


class HeaderRecorder(FakeProducer):
    def __init__(self) -> None:
        super().__init__()
        self.headers: dict[str, list[dict[str, bytes]]] = {}

    def produce(self, topic: str, value: bytes | None, key: bytes | None = None, partition: int | None = None,
                headers: Any = None, on_delivery: Callable[..., None] | None = None) -> None:
        self.headers.setdefault(topic, []).append(dict(headers or []))
        super().produce(topic, value, key, partition, headers, on_delivery)


def test_a_budget_refusal_is_dead_lettered_with_its_reason() -> None:
    refused = KeyDelta(key=(0, b"k"), state=b"s", version=1, finished=[meta(1)],
                       failures=[(meta(1), {"text": "x"}, BudgetExceeded("key 'k': tokens budget spent"))])
    producer = HeaderRecorder()
    Checkpoint("t#1", [refused], [], [], {}, TOPICS).produce(producer)
    (dlq,) = producer.headers["dlq"]
    assert dlq[HEADER_PREFIX + "dlq.reason"] == b"budget-exceeded"
    assert dlq[HEADER_PREFIX + "dlq.exception"] == b"BudgetExceeded"
