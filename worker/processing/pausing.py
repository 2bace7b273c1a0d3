"""The one place partitions are paused and resumed.

A partition can be held back for several reasons at once (its state is restoring, one of its keys
is hot, the in-flight window is full, the worker is shutting down). Each site adds or removes its
own reason; the consumer is paused when the first reason appears and resumed only when the last
one goes, so no site can resume a partition another still holds.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any, Protocol

from confluent_kafka import TopicPartition

__all__ = ["PauseReason", "PausingManager"]

TopicPart = tuple[str, int]


class PauseReason(enum.Enum):
    RESTORING = "restoring"  # its state is being restored from the changelog
    HOT_KEY = "hot-key"  # one of its keys holds its share of the in-flight window
    WINDOW_FULL = "window-full"  # the window stayed full without progress (a model outage, say)
    SHUTDOWN = "shutdown"


class _Consumer(Protocol):
    def pause(self, partitions: list[TopicPartition]) -> None: ...
    def resume(self, partitions: list[TopicPartition]) -> None: ...


class PausingManager:
    """Reasons per assigned partition; reasons that hold for every partition apply to new ones too."""

    def __init__(self, consumer: _Consumer, gauge: Any = None) -> None:
        self._consumer = consumer
        self._gauge = gauge  # partitions paused for any reason
        self._reasons: dict[TopicPart, set[PauseReason]] = {}
        self._everywhere: set[PauseReason] = set()

    def assign(self, partitions: Iterable[TopicPart], *reasons: PauseReason) -> None:
        """Track newly assigned partitions, held for ``reasons`` and for every reason that holds everywhere."""
        held = set(reasons) | self._everywhere
        fresh = [tp for tp in partitions if tp not in self._reasons]
        for tp in fresh:
            self._reasons[tp] = set(held)
        if held and fresh:
            self._consumer.pause([TopicPartition(*tp) for tp in fresh])
        self._update_gauge()

    def forget(self, partitions: Iterable[TopicPart]) -> None:
        """Partitions revoked or lost: no longer ours to resume."""
        for tp in partitions:
            self._reasons.pop(tp, None)
        self._update_gauge()

    def pause(self, partitions: Iterable[TopicPart], reason: PauseReason) -> None:
        newly = []
        for tp in partitions:
            reasons = self._reasons.get(tp)
            if reasons is None or reason in reasons:
                continue
            if not reasons:
                newly.append(tp)
            reasons.add(reason)
        if newly:
            self._consumer.pause([TopicPartition(*tp) for tp in newly])
        self._update_gauge()

    def resume(self, partitions: Iterable[TopicPart], reason: PauseReason) -> None:
        freed = []
        for tp in partitions:
            reasons = self._reasons.get(tp)
            if reasons is None or reason not in reasons:
                continue
            reasons.discard(reason)
            if not reasons:
                freed.append(tp)
        if freed:
            self._consumer.resume([TopicPartition(*tp) for tp in freed])
        self._update_gauge()

    def pause_all(self, reason: PauseReason) -> None:
        self._everywhere.add(reason)
        self.pause(list(self._reasons), reason)

    def resume_all(self, reason: PauseReason) -> None:
        self._everywhere.discard(reason)
        self.resume(list(self._reasons), reason)

    def holds(self, reason: PauseReason) -> bool:
        """Whether ``reason`` holds every partition (see :meth:`pause_all`)."""
        return reason in self._everywhere

    def reasons(self, partition: TopicPart) -> frozenset[PauseReason]:
        return frozenset(self._reasons.get(partition, ()))

    def _update_gauge(self) -> None:
        if self._gauge is not None:
            self._gauge.set(sum(1 for reasons in self._reasons.values() if reasons))
