"""Prometheus metrics for the agent worker.

``WorkerMetrics`` owns its own ``CollectorRegistry`` (never the process-global
one) so that several workers -- or several tests -- can coexist in one process
without duplicate-registration errors.  It also implements the duck-typed
metrics-sink interface that the Kafka-free agent core (``agentplan``) calls,
so the core reports timings without importing prometheus_client.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agentplan.endpoints import EndpointRegistry, model_endpoints
from agentplan.limits import LimiterRegistry, endpoint_limits
from worker.observability.loop_metrics import LoopCounter, LoopHistogram

logger = logging.getLogger(__name__)

PREFIX = "agentfleet_"

#: Latency buckets spanning fast local work (1 ms) up to slow LLM calls (2 min).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)

#: Every metric family name as it appears in the exposition text for its
#: primary series: counters with ``_total``, histograms with their base name.
METRIC_NAMES: tuple[str, ...] = (
    "agentfleet_records_in_total",
    "agentfleet_records_out_total",
    "agentfleet_records_skipped_total",
    "agentfleet_dlq_records_total",
    "agentfleet_records_lost_to_retention_total",
    "agentfleet_inflight_records",
    "agentfleet_uncommitted_records",
    "agentfleet_inflight_limit",
    "agentfleet_key_queue_depth",
    "agentfleet_active_keys",
    "agentfleet_consumer_lag",
    "agentfleet_assigned_partitions",
    "agentfleet_paused_partitions",
    "agentfleet_run_duration_seconds",
    "agentfleet_action_duration_seconds",
    "agentfleet_action_errors_total",
    "agentfleet_llm_request_duration_seconds",
    "agentfleet_llm_requests_total",
    "agentfleet_llm_errors_total",
    "agentfleet_llm_tokens_total",
    "agentfleet_llm_cost_usd_total",
    "agentfleet_transactions_committed_total",
    "agentfleet_transactions_aborted_total",
    "agentfleet_commit_duration_seconds",
    "agentfleet_last_commit_timestamp_seconds",
    "agentfleet_event_loop_round_age_seconds",
    "agentfleet_restore_records_total",
    "agentfleet_restore_duration_seconds",
    "agentfleet_restoring_partitions",
    "agentfleet_rebalances_total",
    "agentfleet_end_to_end_latency_seconds",
    "agentfleet_transient_retries_total",
    "agentfleet_llm_endpoint_up",
    "agentfleet_llm_fallbacks_total",
    "agentfleet_llm_concurrency_limit",
    "agentfleet_llm_inflight_requests",
    "agentfleet_llm_throttled_seconds_total",
    "agentfleet_worker_info",
)


def _default_version() -> str:
    """Best-effort installed package version, for the worker_info series."""
    try:
        from importlib.metadata import version

        return version("kafka-agent-fleet")
    except Exception:  # not installed (e.g. running from a checkout)
        return "unknown"


class EndpointUpCollector(Collector):
    """``agentfleet_llm_endpoint_up{endpoint}``: 1 while a model endpoint answers, 0 once requests fail in a
    row (``EndpointRegistry.failures_to_down``) until the next answer. Read from agentplan's endpoint
    registry at scrape time, so nothing feeds it."""

    _labelnames = ("endpoint",)  # as a labelled Gauge has it (README's metrics reference test reads it)

    def __init__(self, endpoints: EndpointRegistry) -> None:
        self._endpoints = endpoints

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(PREFIX + "llm_endpoint_up",
                                   "1 while the model endpoint answers, 0 once its requests fail in a row "
                                   "(unreachable, timed out, 5xx, 401/403/404).", labels=self._labelnames)
        for status in self._endpoints.statuses():
            family.add_metric([status.url], 1.0 if status.up else 0.0)
        yield family


class _LimiterCollector(Collector):
    """One family of the endpoint limiters (agentplan.limits), read at scrape time."""

    _labelnames = ("endpoint",)

    def __init__(self, limits: LimiterRegistry, name: str, help_text: str, read: str, counter: bool = False) -> None:
        self._limits = limits
        self._name = name
        self._help = help_text
        self._read = read
        self._counter = counter

    def collect(self) -> Iterator[Metric]:
        family_type = CounterMetricFamily if self._counter else GaugeMetricFamily
        family = family_type(PREFIX + self._name, self._help, labels=self._labelnames)
        for status in self._limits.statuses():
            family.add_metric([status.url], float(getattr(status, self._read)))
        yield family


class WorkerMetrics:
    """All worker metrics, registered on a private registry.

    Attributes carry the metric name minus the ``agentfleet_`` prefix
    (e.g. ``records_in_total``, ``run_duration_seconds``).  The sink methods
    (``action_finished``, ``run_finished``, ``llm_request``,
    ``transient_retry``) are cheap and never raise: observability must not
    break record processing.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        app_id: str | None = None,
        instance_id: str = "",
        version: str | None = None,
        endpoints: EndpointRegistry = model_endpoints,
        limits: LimiterRegistry = endpoint_limits,
    ) -> None:
        self.registry: CollectorRegistry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        b = LATENCY_BUCKETS

        # Record flow.
        self.records_in_total = LoopCounter(
            PREFIX + "records_in_total", "Records consumed from input topics.",
            ["topic", "partition"], registry=r)
        self.records_out_total = Counter(
            PREFIX + "records_out_total", "Records produced to output topics.",
            ["topic"], registry=r)
        self.records_skipped_total = Counter(
            PREFIX + "records_skipped_total",
            "Input records skipped, e.g. replayed records whose run already finished.",
            ["reason"], registry=r)
        self.dlq_records_total = Counter(
            PREFIX + "dlq_records_total", "Records sent to the dead-letter queue.",
            ["reason"], registry=r)
        self.records_lost_to_retention_total = Counter(
            PREFIX + "records_lost_to_retention_total",
            "Input records deleted by retention before the group read them (committed offset below the log "
            "start offset at assignment); reading resumed at the log start.",
            ["topic", "partition"], registry=r)

        # Concurrency / backpressure.
        self.inflight_records = Gauge(
            PREFIX + "inflight_records", "Records consumed and not finished yet (bounded by --max-inflight).",
            registry=r)
        self.uncommitted_records = Gauge(
            PREFIX + "uncommitted_records", "Records consumed whose results are not committed yet (at most "
            "twice --max-inflight).", registry=r)
        self.inflight_limit = Gauge(
            PREFIX + "inflight_limit", "Configured maximum of in-flight records.", registry=r)
        self.key_queue_depth = Gauge(
            PREFIX + "key_queue_depth", "Records waiting behind a busy key.", registry=r)
        self.active_keys = Gauge(
            PREFIX + "active_keys", "Keys with a run currently in progress.", registry=r)
        self.consumer_lag = Gauge(
            PREFIX + "consumer_lag", "Consumer lag in records per input partition.",
            ["topic", "partition"], registry=r)
        self.assigned_partitions = Gauge(
            PREFIX + "assigned_partitions", "Partitions currently assigned to this worker.",
            registry=r)
        self.paused_partitions = Gauge(
            PREFIX + "paused_partitions", "Assigned partitions currently paused for backpressure.",
            registry=r)

        # Agent execution.
        self.run_duration_seconds = LoopHistogram(
            PREFIX + "run_duration_seconds", "Wall time of one agent run (one input record).",
            registry=r, buckets=b)
        self.action_duration_seconds = LoopHistogram(
            PREFIX + "action_duration_seconds", "Wall time of one action invocation.",
            ["action"], registry=r, buckets=b)
        self._action_durations: dict[str, Any] = {}  # action name -> its bound histogram child
        self.action_errors_total = Counter(
            PREFIX + "action_errors_total", "Actions that raised, by exception type.",
            ["action", "kind"], registry=r)

        # LLM calls.
        self.llm_request_duration_seconds = LoopHistogram(
            PREFIX + "llm_request_duration_seconds", "Wall time of one LLM request.",
            ["model"], registry=r, buckets=b)
        self.llm_requests_total = LoopCounter(
            PREFIX + "llm_requests_total", "LLM requests by outcome (ok|error).",
            ["model", "outcome"], registry=r)
        self.llm_errors_total = Counter(
            PREFIX + "llm_errors_total", "Failed LLM requests, by exception type.",
            ["model", "kind"], registry=r)
        self.llm_tokens_total = LoopCounter(
            PREFIX + "llm_tokens_total", "LLM tokens used, by type (prompt|completion).",
            ["model", "type"], registry=r)
        self.llm_cost_usd_total = Counter(
            PREFIX + "llm_cost_usd_total", "Cost of LLM calls in USD, priced by the agent's budgets price table.",
            ["model"], registry=r)

        # Transactions.
        self.transactions_committed_total = Counter(
            PREFIX + "transactions_committed_total", "Kafka transactions committed.", registry=r)
        self.transactions_aborted_total = Counter(
            PREFIX + "transactions_aborted_total", "Kafka transactions aborted.", registry=r)
        self.commit_duration_seconds = Histogram(
            PREFIX + "commit_duration_seconds", "Wall time of one transaction commit.",
            registry=r, buckets=b)
        self.last_commit_timestamp_seconds = Gauge(
            PREFIX + "last_commit_timestamp_seconds",
            "Unix time of the last successful transaction commit.", registry=r)
        self.event_loop_round_age_seconds = Gauge(
            PREFIX + "event_loop_round_age_seconds",
            "Seconds since the event loop began its current round; /healthz fails past loop_stall_timeout_s.",
            registry=r)

        # State restore.
        self.restore_records_total = Counter(
            PREFIX + "restore_records_total", "Changelog records replayed during state restore.",
            registry=r)
        self.restore_duration_seconds = Histogram(
            PREFIX + "restore_duration_seconds", "Wall time to restore one partition's state.",
            registry=r, buckets=b)
        self.restoring_partitions = Gauge(
            PREFIX + "restoring_partitions", "Partitions currently restoring state.", registry=r)

        # Group membership.
        self.rebalances_total = Counter(
            PREFIX + "rebalances_total", "Rebalance callbacks by event (assigned|revoked|lost).",
            ["event"], registry=r)

        self.end_to_end_latency_seconds = LoopHistogram(
            PREFIX + "end_to_end_latency_seconds",
            "Time from input record timestamp to transaction commit.",
            registry=r, buckets=b)

        self.transient_retries_total = Counter(
            PREFIX + "transient_retries_total", "Retries of transient failures, by kind.",
            ["kind"], registry=r)

        self.llm_endpoint_up = EndpointUpCollector(endpoints)
        r.register(self.llm_endpoint_up)
        self.llm_fallbacks_total = Counter(
            PREFIX + "llm_fallbacks_total", "Model calls answered by a fallback setup (requested setup, fallback).",
            ["setup", "fallback"], registry=r)
        self.llm_concurrency_limit = _LimiterCollector(
            limits, "llm_concurrency_limit", "Adaptive limit of concurrent calls to the model endpoint.", "limit")
        self.llm_inflight_requests = _LimiterCollector(
            limits, "llm_inflight_requests", "Calls to the model endpoint holding a permit.", "in_flight")
        self.llm_throttled_seconds = _LimiterCollector(
            limits, "llm_throttled_seconds", "Seconds calls waited for a permit of the model endpoint (limit, "
                                             "Retry-After pause, rate share), summed over calls.",
            "throttled_s", counter=True)
        self.llm_throttled_seconds_total = self.llm_throttled_seconds
        for collector in (self.llm_concurrency_limit, self.llm_inflight_requests, self.llm_throttled_seconds):
            r.register(collector)
        self.worker_info = Gauge(
            PREFIX + "worker_info", "Worker identity; constant 1.",
            ["app_id", "instance_id", "version"], registry=r)

        if app_id is not None:
            self.set_worker_info(app_id, instance_id, version)

    # ------------------------------------------------------------------ info

    def set_worker_info(self, app_id: str, instance_id: str, version: str | None = None) -> None:
        """Publish the worker identity as a single ``worker_info`` series set to 1."""
        self.worker_info.clear()
        self.worker_info.labels(
            app_id=str(app_id),
            instance_id=str(instance_id),
            version=str(version) if version is not None else _default_version(),
        ).set(1)

    # --------------------------------------------------- metrics-sink interface

    def action_finished(self, action: str, duration_s: float, error: BaseException | None) -> None:
        """Record one action invocation (called by the agent core)."""
        try:
            # Bound once per action: three actions per record made the label lookup a hot spot.
            child = self._action_durations.get(action)
            if child is None:
                child = self._action_durations[action] = self.action_duration_seconds.labels(action)
            child.observe(duration_s if duration_s > 0.0 else 0.0)
            if error is not None:
                self.action_errors_total.labels(str(action), type(error).__name__).inc()
        except Exception:  # never let metrics break processing
            logger.debug("action_finished metric update failed", exc_info=True)

    def run_finished(self, duration_s: float) -> None:
        """Record one completed agent run (called by the agent core)."""
        try:
            self.run_duration_seconds.observe(duration_s if duration_s > 0.0 else 0.0)
        except Exception:
            logger.debug("run_finished metric update failed", exc_info=True)

    def llm_request(
        self,
        model: str,
        duration_s: float,
        error: BaseException | None,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
    ) -> None:
        """Record one LLM request with its outcome and token usage."""
        try:
            self.llm_request_duration_seconds.labels(model).observe(duration_s if duration_s > 0.0 else 0.0)
            if error is None:
                self.llm_requests_total.labels(model, "ok").inc()
            else:
                self.llm_requests_total.labels(model, "error").inc()
                self.llm_errors_total.labels(str(model), type(error).__name__).inc()
            if prompt_tokens and prompt_tokens > 0:
                self.llm_tokens_total.labels(model, "prompt").inc(prompt_tokens)
            if completion_tokens and completion_tokens > 0:
                self.llm_tokens_total.labels(model, "completion").inc(completion_tokens)
        except Exception:
            logger.debug("llm_request metric update failed", exc_info=True)

    def llm_fallback(self, setup: str, fallback: str) -> None:
        """Count one model call answered by ``fallback`` instead of ``setup``."""
        try:
            self.llm_fallbacks_total.labels(str(setup), str(fallback)).inc()
        except Exception:
            logger.debug("llm_fallback metric update failed", exc_info=True)

    def llm_cost(self, model: str, usd: float) -> None:
        """Add the cost of one model call (priced by the agent's budgets price table)."""
        try:
            self.llm_cost_usd_total.labels(model).inc(usd)
        except Exception:
            logger.debug("llm_cost metric update failed", exc_info=True)

    def transient_retry(self, kind: str) -> None:
        """Count one retry of a transient failure."""
        try:
            self.transient_retries_total.labels(str(kind)).inc()
        except Exception:
            logger.debug("transient_retry metric update failed", exc_info=True)


def exported_metric_names(registry: CollectorRegistry) -> set[str]:
    """Metric family names present in ``generate_latest(registry)``.

    Parses ``# TYPE`` lines: histograms/summaries contribute their base name,
    counters their name with a ``_total`` suffix (added if the TYPE line lacks
    it), gauges their name.  The ``<name>_created`` gauge families that
    prometheus_client emits alongside counters and histograms are omitted, so
    the result is directly comparable with :data:`METRIC_NAMES`.
    """
    types: list[tuple[str, str]] = []
    for line in generate_latest(registry).decode("utf-8").splitlines():
        if not line.startswith("# TYPE "):
            continue
        parts = line.split()
        if len(parts) >= 4:
            types.append((parts[2], parts[3]))

    with_created: set[str] = set()  # base names of families that may emit *_created
    for name, mtype in types:
        if mtype == "counter":
            base = name[: -len("_total")] if name.endswith("_total") else name
            with_created.add(base)
        elif mtype in ("histogram", "summary", "gaugehistogram"):
            with_created.add(name)

    names: set[str] = set()
    for name, mtype in types:
        if mtype == "counter":
            names.add(name if name.endswith("_total") else name + "_total")
        elif mtype == "gauge" and name.endswith("_created") and name[: -len("_created")] in with_created:
            continue
        else:
            names.add(name)
    return names
