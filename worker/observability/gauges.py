"""Gauges refreshed every few seconds from the loop: window, key queues, consumer lag per partition."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import Consumer, TopicPartition

from agentplan import Engine
from worker.observability.metrics import WorkerMetrics
from worker.offsets import OffsetTracker

__all__ = ["refresh_gauges"]


def refresh_gauges(m: WorkerMetrics, tracker: OffsetTracker, engine: Engine, consumer: Consumer,
                   partitions: Iterable[tuple[str, int]]) -> None:
    """Lag is the high watermark the client last saw minus the next offset to commit (best effort)."""
    m.key_queue_depth.set(engine.queued_inputs)
    m.active_keys.set(engine.active_keys)
    for topic, partition in list(partitions):
        try:
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
        except Exception:  # noqa: BLE001 - lag is best effort
            continue
        committed = tracker.committable((topic, partition))
        if high is not None and high >= 0 and committed is not None:
            m.consumer_lag.labels(topic, str(partition)).set(max(0, high - committed))
