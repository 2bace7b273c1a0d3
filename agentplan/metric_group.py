"""User metrics, Flink Agents 0.3's ``MetricGroup`` API: ``ctx.agent_metric_group`` and
``ctx.action_metric_group`` hand out counters, meters, gauges and histograms by name.

Metrics live in the process (one tree per engine) and are read with :meth:`MetricGroup.snapshot`;
the Kafka worker exports them on /metrics as ``agentfleet_user_metric`` (worker/observability/user_metrics.py).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any


class Counter:
    def __init__(self) -> None:
        self._count = 0

    def inc(self, n: int = 1) -> None:
        self._count += n

    def dec(self, n: int = 1) -> None:
        self._count -= n

    def get_count(self) -> int:
        return self._count


class Meter:
    """Events per second over the last minute."""

    WINDOW_S = 60.0

    def __init__(self) -> None:
        self._marks: deque[tuple[float, int]] = deque()
        self._count = 0

    def mark(self, n: int = 1) -> None:
        now = time.monotonic()
        self._marks.append((now, n))
        self._count += n
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._marks and now - self._marks[0][0] > self.WINDOW_S:
            self._marks.popleft()

    def get_rate(self) -> float:
        self._trim(time.monotonic())
        return sum(n for _, n in self._marks) / self.WINDOW_S

    def get_count(self) -> int:
        return self._count


class Gauge:
    def __init__(self) -> None:
        self._value: Any = None

    def update(self, value: Any) -> None:
        self._value = value

    def get_value(self) -> Any:
        return self._value


class Histogram:
    """Statistics over the last ``window_size`` values."""

    def __init__(self, window_size: int = 100) -> None:
        self._values: deque[float] = deque(maxlen=window_size)

    def update(self, value: float) -> None:
        self._values.append(value)

    def get_mean(self) -> float:
        return sum(self._values) / len(self._values) if self._values else 0.0

    def get_max(self) -> float:
        return max(self._values, default=0.0)

    def get_min(self) -> float:
        return min(self._values, default=0.0)


class MetricGroup:
    """A named scope of metrics; sub-groups nest (``get_sub_group("model", "gpt")``)."""

    def __init__(self, scope: tuple[str, ...] = ()) -> None:
        self.scope = scope
        self._lock = threading.Lock()  # tools run in threads and may create metrics concurrently
        self._groups: dict[tuple[str, ...], MetricGroup] = {}
        self._metrics: dict[str, Any] = {}

    def get_sub_group(self, name: str, value: str | None = None) -> MetricGroup:
        key = (name,) if value is None else (name, value)
        with self._lock:
            group = self._groups.get(key)
            if group is None:
                group = self._groups[key] = MetricGroup(self.scope + key)
            return group

    def _metric(self, name: str, kind: type, *args: Any) -> Any:
        with self._lock:
            metric = self._metrics.get(name)
            if metric is None:
                metric = self._metrics[name] = kind(*args)
            elif not isinstance(metric, kind):
                raise TypeError(f"metric {'.'.join((*self.scope, name))!r} is a {type(metric).__name__}, "
                                f"not a {kind.__name__}")
            return metric

    def get_counter(self, name: str) -> Counter:
        return self._metric(name, Counter)

    def get_meter(self, name: str) -> Meter:
        return self._metric(name, Meter)

    def get_gauge(self, name: str) -> Gauge:
        return self._metric(name, Gauge)

    def get_histogram(self, name: str, window_size: int = 100) -> Histogram:
        return self._metric(name, Histogram, window_size)

    def snapshot(self) -> list[tuple[tuple[str, ...], str, Any]]:
        """Every metric of this group and its sub-groups: (scope, name, metric)."""
        with self._lock:
            own = [(self.scope, name, metric) for name, metric in self._metrics.items()]
            groups = list(self._groups.values())
        for group in groups:
            own.extend(group.snapshot())
        return own
