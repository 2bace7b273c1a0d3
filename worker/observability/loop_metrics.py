"""Counters and histograms for the per-record hot path, updated without locks.

prometheus_client guards every increment with a lock (a histogram observation takes two), which
cost ~10% of the worker's CPU per record at S1 rates (measured, ``bench/``). These families are
updated only from the worker's event-loop thread, so plain integer arithmetic suffices; a scrape
from the HTTP thread copies the values under the GIL. A scrape racing an update may see a bucket
count one ahead of ``_sum`` for that instant; the next scrape is exact again.

They register on a ``CollectorRegistry`` like prometheus_client metrics and expose the same
samples, minus the ``_created`` series.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class _Family(Collector):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 registry: CollectorRegistry | None) -> None:
        self.name = name
        self.documentation = documentation
        self._labelnames = tuple(labelnames)  # the attribute name prometheus_client metrics use too
        self._children: dict[tuple[str, ...], object] = {}  # by label values: what collect() exports
        self._by_arguments: dict[tuple[object, ...], object] = {}  # by labels() positional arguments
        self._unlabelled = None if self._labelnames else self._new_child()
        if self._unlabelled is not None:
            self._children[()] = self._unlabelled
        if registry is not None:
            registry.register(self)

    def _new_child(self) -> object:
        raise NotImplementedError

    def labels(self, *values: str, **by_name: str) -> object:
        # The hot path: the same positional arguments as before, one dict lookup.
        child = None if by_name else self._by_arguments.get(values)
        if child is not None:
            return child
        arguments = values
        if by_name:
            if values:
                raise ValueError("labels(): pass label values by position or by name, not both")
            try:
                values = tuple(str(by_name[n]) for n in self._labelnames)
            except KeyError as exc:
                raise ValueError(f"{self.name}: missing label {exc}") from None
            if len(by_name) != len(self._labelnames):
                raise ValueError(f"{self.name}: unknown labels {sorted(set(by_name) - set(self._labelnames))}")
        else:
            values = tuple(str(v) for v in values)
        if len(values) != len(self._labelnames):
            raise ValueError(f"{self.name}: expected labels {self._labelnames}, got {values}")
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._new_child()
        if not by_name:
            self._by_arguments[arguments] = child
        return child

    def _labelled(self) -> Iterator[tuple[list[str], object]]:
        for values, child in list(self._children.items()):
            yield list(values), child


class _CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        self.value += amount


class LoopCounter(_Family):
    """A labelled counter updated from one thread; ``name`` ends in ``_total``."""

    def _new_child(self) -> _CounterChild:
        return _CounterChild()

    def labels(self, *values: str, **by_name: str) -> _CounterChild:
        return super().labels(*values, **by_name)  # type: ignore[return-value]

    def inc(self, amount: float = 1.0) -> None:
        assert self._unlabelled is not None, f"{self.name} has labels: use labels(...).inc()"
        self._unlabelled.inc(amount)  # type: ignore[attr-defined]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self._labelnames)
        for values, child in self._labelled():
            family.add_metric(values, child.value)  # type: ignore[attr-defined]
        yield family


class _HistogramChild:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, amount: float) -> None:
        # bisect_left finds the first bound >= amount: Prometheus buckets are "less than or equal".
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.total += amount


class LoopHistogram(_Family):
    """A labelled histogram updated from one thread."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (),
                 registry: CollectorRegistry | None = None, buckets: Sequence[float] = ()) -> None:
        bounds = tuple(float(b) for b in buckets if not math.isinf(b))
        if not bounds or list(bounds) != sorted(set(bounds)):
            raise ValueError(f"{name}: buckets must be increasing and finite, got {buckets}")
        self.bounds = bounds
        super().__init__(name, documentation, labelnames, registry)

    def _new_child(self) -> _HistogramChild:
        return _HistogramChild(self.bounds)

    def labels(self, *values: str, **by_name: str) -> _HistogramChild:
        return super().labels(*values, **by_name)  # type: ignore[return-value]

    def observe(self, amount: float) -> None:
        assert self._unlabelled is not None, f"{self.name} has labels: use labels(...).observe()"
        self._unlabelled.observe(amount)  # type: ignore[attr-defined]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self._labelnames)
        les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        for values, child in self._labelled():
            counts = list(child.counts)  # type: ignore[attr-defined]
            cumulative, running = [], 0
            for le, count in zip(les, counts):
                running += count
                cumulative.append((le, running))
            family.add_metric(values, cumulative, child.total)  # type: ignore[attr-defined]
        yield family

