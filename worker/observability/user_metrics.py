"""Agents' own metrics (``ctx.agent_metric_group`` / ``ctx.action_metric_group``) on /metrics.

Read at scrape time from the engine's metric tree: ``agentfleet_user_metric{scope, name, field}``, one
sample per value (a counter's ``count``, a meter's ``rate`` and ``count``, a gauge's ``value``, a
histogram's ``mean``/``min``/``max``). ``scope`` is the group path, e.g. ``action.classify``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from agentplan.metric_group import Counter, Gauge, Histogram, Meter, MetricGroup

NAME = "agentfleet_user_metric"


class UserMetricsCollector(Collector):
    def __init__(self, root: MetricGroup) -> None:
        self.root = root

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(NAME, "Metrics the agent's actions report through their metric groups.",
                                   labels=["scope", "name", "field"])
        for scope, name, metric in self.root.snapshot():
            where = ".".join(scope)
            for field, value in _values(metric):
                family.add_metric([where, name, field], value)
        yield family


def _values(metric: object) -> list[tuple[str, float]]:
    if isinstance(metric, Counter):
        return [("count", float(metric.get_count()))]
    if isinstance(metric, Meter):
        return [("rate", metric.get_rate()), ("count", float(metric.get_count()))]
    if isinstance(metric, Histogram):
        return [("mean", metric.get_mean()), ("min", metric.get_min()), ("max", metric.get_max())]
    if isinstance(metric, Gauge):
        value = metric.get_value()
        return [("value", float(value))] if isinstance(value, (int, float)) else []
    return []
