"""The lock-free hot-path families expose exactly what prometheus_client's would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from worker.observability.loop_metrics import LoopCounter, LoopHistogram

BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0)
# On a bound (le is inclusive), between bounds, below the first and above the last.
VALUES = (0.0, 0.001, 0.0011, 0.05, 0.1, 0.5, 1.0, 9.99, 10.0, 11.0, 1e6)


def _samples(registry: CollectorRegistry) -> list[str]:
    """Exposition lines without the _created series (the loop families do not keep them)."""
    return sorted(line for line in generate_latest(registry).decode().splitlines()
                  if line and "_created" not in line)


def test_histogram_exposes_the_same_samples_as_prometheus_client():
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    mine = LoopHistogram("h_seconds", "doc", ["model"], registry=ours, buckets=BUCKETS)
    reference = Histogram("h_seconds", "doc", ["model"], registry=theirs, buckets=BUCKETS)
    for i, value in enumerate(VALUES):
        model = "a" if i % 2 else "b"
        mine.labels(model).observe(value)
        reference.labels(model).observe(value)
    mine.labels(model="c")  # a child that saw nothing still exports zeros
    reference.labels(model="c")
    assert _samples(ours) == _samples(theirs)


def test_unlabelled_histogram_and_counter_match_prometheus_client():
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    h, ref_h = (LoopHistogram("run_seconds", "doc", registry=ours, buckets=BUCKETS),
                Histogram("run_seconds", "doc", registry=theirs, buckets=BUCKETS))
    c, ref_c = (LoopCounter("calls_total", "doc", ["outcome"], registry=ours),
                Counter("calls_total", "doc", ["outcome"], registry=theirs))
    for value in VALUES:
        h.observe(value)
        ref_h.observe(value)
    for outcome, amount in (("ok", 1), ("ok", 2.5), ("error", 1)):
        c.labels(outcome=outcome).inc(amount)
        ref_c.labels(outcome=outcome).inc(amount)
    assert _samples(ours) == _samples(theirs)
    assert ours.get_sample_value("calls_total", {"outcome": "ok"}) == 3.5
    assert ours.get_sample_value("run_seconds_bucket", {"le": "0.001"}) == 2.0
    assert ours.get_sample_value("run_seconds_count") == len(VALUES)


def test_wrong_labels_and_negative_increments_are_refused():
    c = LoopCounter("x_total", "doc", ["a", "b"], registry=None)
    with pytest.raises(ValueError, match="expected labels"):
        c.labels("only-one")
    with pytest.raises(ValueError, match="missing label"):
        c.labels(a="1", c="2")
    with pytest.raises(ValueError, match="counters only go up"):
        c.labels("1", "2").inc(-1)
    with pytest.raises(ValueError, match="increasing"):
        LoopHistogram("h", "doc", buckets=(1.0, 0.5))


def test_positional_named_and_non_string_labels_reach_one_child():
    registry = CollectorRegistry()
    c = LoopCounter("calls_total", "doc", ["model", "attempt"], registry=registry)
    c.labels("m", 1).inc()
    c.labels("m", "1").inc()
    c.labels(model="m", attempt="1").inc()
    c.labels("m", 1).inc()  # served by the positional lookup the first call cached
    assert registry.get_sample_value("calls_total", {"model": "m", "attempt": "1"}) == 4.0
    assert _samples(registry) == ['# HELP calls_total doc', '# TYPE calls_total counter',
                                  'calls_total{attempt="1",model="m"} 4.0']
