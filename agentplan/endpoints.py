"""Health of the model endpoints this process calls, for probes, metrics and operators' logs.

Kafka-free: chat model connections report each request's outcome here, and a driver (the Kafka
worker's ``/readyz`` and ``agentfleet_llm_endpoint_up`` gauge, or anything else) reads
:meth:`EndpointRegistry.statuses`. The registry also does the logging an operator needs when an
endpoint fails: one WARNING when it starts failing and one when it answers again, naming the URL and
the setting the URL came from, and while it keeps failing one reminder per ``warn_interval_s`` (not
one line per retried request). An endpoint is down after ``failures_to_down`` failed requests in a
row, so that one 5xx or one connection lost under a healthy server does not flap ``/readyz``.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

__all__ = ["EndpointRegistry", "EndpointStatus", "ModelEndpoint", "model_endpoints", "redact_url"]


def redact_url(url: str) -> str:
    """``url`` without credentials or query: user:password@ and ?key=... must not reach logs or labels."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port is not None else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True)
class EndpointStatus:
    """A snapshot of one endpoint's health."""

    url: str  # redacted: no credentials, no query
    source: str  # the setting the URL came from, e.g. "OPENAI_BASE_URL"
    up: bool  # False from the failures_to_down-th failed request in a row until the next answer
    since: float  # wall-clock time (time.time()) of the last change of ``up``
    last_error: str | None  # the latest failure, kept after recovery
    failures: int  # failed requests in a row (since the endpoint last answered)


class ModelEndpoint:
    """One endpoint's health; its connection reports every request's outcome."""

    def __init__(self, registry: EndpointRegistry, url: str, source: str) -> None:
        self._registry = registry
        self.url = url
        self.source = source
        self.up = True  # until a request fails: an endpoint nobody called yet is not known to fail
        self.since = registry._wall()
        self.last_error: str | None = None
        self.failures = 0
        self._down_at = 0.0  # monotonic
        self._last_warning = 0.0  # monotonic

    def succeeded(self) -> None:
        """The endpoint answered (any HTTP answer that is not its own failure, a 429 included)."""
        if self.up and not self.failures:  # the hot path: no lock, no log
            return
        with self._registry._lock:
            if self.up:
                self.failures = 0
                return
            down_for = self._registry._clock() - self._down_at
            failures = self.failures
            self.up, self.since, self.failures = True, self._registry._wall(), 0
        logger.warning("model endpoint %s (from %s) answers again after %.0fs and %d failed requests",
                       self.url, self.source, down_for, failures)

    def failed(self, error: str) -> None:
        """A request failed because of the endpoint: unreachable, timed out, 5xx, or refused as misconfigured."""
        registry = self._registry
        now = registry._clock()
        with registry._lock:
            self.last_error = error
            self.failures += 1
            failures = self.failures
            if self.up:
                if failures < registry.failures_to_down:
                    return
                self.up, self.since, self._down_at = False, registry._wall(), now
                first = True
            elif now - self._last_warning >= registry.warn_interval_s:
                first = False
            else:
                return
            self._last_warning = now
            down_for = now - self._down_at
        if first:
            logger.warning("model endpoint %s (from %s) is failing: %s. Calls are retried with backoff; "
                           "/readyz reports the endpoint until it answers", self.url, self.source, error)
        else:
            logger.warning("model endpoint %s (from %s) still failing after %.0fs and %d failed requests: %s",
                           self.url, self.source, down_for, failures, error)

    def status(self) -> EndpointStatus:
        return EndpointStatus(self.url, self.source, self.up, self.since, self.last_error, self.failures)


class EndpointRegistry:
    """The model endpoints of this process, by redacted URL. Thread-safe: probes read it from another thread."""

    def __init__(self, warn_interval_s: float = 60.0, failures_to_down: int = 3,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.warn_interval_s = warn_interval_s
        self.failures_to_down = max(1, failures_to_down)
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._endpoints: dict[str, ModelEndpoint] = {}

    def endpoint(self, url: str, source: str) -> ModelEndpoint:
        """The endpoint for ``url`` (registered on first use; the first caller's ``source`` is kept)."""
        key = redact_url(url)
        with self._lock:
            found = self._endpoints.get(key)
            if found is None:
                found = self._endpoints[key] = ModelEndpoint(self, key, source)
            return found

    def statuses(self) -> list[EndpointStatus]:
        with self._lock:
            return [e.status() for e in self._endpoints.values()]

    def clear(self) -> None:
        """Forget every endpoint (tests; a driver that rebuilds its plan)."""
        with self._lock:
            self._endpoints.clear()


#: The process's registry: connections are built as plan resources, away from any driver.
model_endpoints = EndpointRegistry()
