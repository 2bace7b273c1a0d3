"""How many calls a model endpoint gets: an adaptive concurrency limit plus fleet-shared rate limits.

Kafka-free: a chat model connection asks its endpoint's :class:`EndpointLimiter` for a permit before
each request and reports the outcome; a driver that shares a fleet-wide rate among processes (the
Kafka worker, by the partitions it owns) calls :meth:`LimiterRegistry.set_share`.

The concurrency limit is AIMD with a latency guard, after the ideas of Netflix's concurrency-limits:
it grows by one per answered call (nearly doubling per round trip) until the endpoint first pushes back
(slow start), then by about one per round trip while latency stays near its baseline; it holds while
latency climbs, and shrinks by ``BACKOFF_RATIO`` at most once per window of calls on an overload (429,
503, 504, timeout) or a latency past twice the tolerance. A ``Retry-After`` pauses the whole
endpoint, not only the call that got it.

Waiting is on asyncio futures, first come first served: a caller waiting for a permit blocks neither
the event loop nor the callers of other endpoints.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agentplan.config import RETRY_AFTER_MAX_S
from agentplan.endpoints import redact_url
from agentplan.exceptions import ResourceError, TransientError

logger = logging.getLogger(__name__)

__all__ = ["LIMIT_ARGUMENTS", "EndpointLimiter", "LimitSettings", "LimiterRegistry", "LimiterStatus", "Permit",
           "endpoint_limits"]

#: The chat model connection arguments that configure the limiter.
LIMIT_ARGUMENTS = ("max_concurrency", "initial_concurrency", "requests_per_minute", "tokens_per_minute")
DEFAULT_MAX_CONCURRENCY = 1024
DEFAULT_INITIAL_CONCURRENCY = 8
MIN_CONCURRENCY = 1
BACKOFF_RATIO = 0.7
#: Latency counts as flat while the recent average stays within this factor of the baseline (plus a
#: few ms, so that a 1 ms endpoint's jitter is not read as queueing).
LATENCY_TOLERANCE = 2.0
LATENCY_SLACK_S = 0.01
#: The kinds of TransientError (agentplan.integrations.openai.classify_error) that mean "too much load".
OVERLOAD_KINDS = frozenset({"rate_limit", "http_429", "http_503", "http_504", "timeout"})
#: A rate bucket holds this many seconds of its rate, so a fleet's burst stays near one second's worth.
BURST_S = 1.0


@dataclass(frozen=True)
class LimitSettings:
    """The limiter arguments of one chat model connection; all None means no limiter."""

    max_concurrency: int | None = None
    initial_concurrency: int | None = None
    requests_per_minute: float | None = None  # fleet-wide, shared by partition ownership
    tokens_per_minute: float | None = None  # fleet-wide, prompt + completion tokens

    @property
    def enabled(self) -> bool:
        return any(getattr(self, name) is not None for name in LIMIT_ARGUMENTS)

    @classmethod
    def from_arguments(cls, owner: str, arguments: dict[str, Any]) -> LimitSettings:
        """Checked settings; ResourceError naming ``owner`` and the argument otherwise."""
        values: dict[str, Any] = {}
        for name in ("max_concurrency", "initial_concurrency"):
            value = arguments.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ResourceError(f"{owner}: {name} must be an integer >= 1, got {value!r}")
            values[name] = value
        for name in ("requests_per_minute", "tokens_per_minute"):
            value = arguments.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or value <= 0):
                raise ResourceError(f"{owner}: {name} must be a number > 0, got {value!r}")
            values[name] = None if value is None else float(value)
        settings = cls(**values)
        if (settings.initial_concurrency is not None and settings.max_concurrency is not None
                and settings.initial_concurrency > settings.max_concurrency):
            raise ResourceError(f"{owner}: initial_concurrency ({settings.initial_concurrency}) is above "
                                f"max_concurrency ({settings.max_concurrency})")
        return settings


class _Bucket:
    """A token bucket refilled at ``per_s``; it may go into debt (tokens are known after a call)."""

    def __init__(self, per_minute: float, share: float, now: float) -> None:
        self.per_minute = per_minute
        self.per_s = 0.0
        self.capacity = 1.0
        self.level = 0.0
        self.stamp = now
        self.set_share(share, now)
        self.level = self.capacity  # a fresh bucket is full

    def set_share(self, share: float, now: float) -> None:
        self.refill(now)
        self.per_s = self.per_minute / 60.0 * share
        self.capacity = max(1.0, self.per_s * BURST_S)
        self.level = min(self.level, self.capacity)

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.per_s)
        self.stamp = now

    def wait_s(self, now: float, need: float) -> float:
        """Seconds until the level reaches ``need`` (inf at a zero rate)."""
        if self.per_s <= 0:
            return math.inf  # a zero share: nothing may go until set_share
        self.refill(now)
        return 0.0 if self.level >= need else (need - self.level) / self.per_s


@dataclass
class Permit:
    """One call's right to run; hand it back with :meth:`finish`."""

    limiter: EndpointLimiter
    epoch: int
    started: float
    load: int  # calls in flight when granted, this one included
    finished: bool = False

    def finish(self, error: BaseException | None, tokens: int = 0) -> None:
        """The call ended: ``error`` None for an answer, else what it raised (cancellation included)."""
        if not self.finished:
            self.finished = True
            self.limiter._release(self, error, tokens)


@dataclass(frozen=True)
class LimiterStatus:
    url: str
    limit: int
    in_flight: int
    throttled_s: float
    share: float


class EndpointLimiter:
    """The adaptive concurrency limit and rate buckets of one model endpoint (by redacted URL)."""

    def __init__(self, url: str, settings: LimitSettings, share: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.settings = settings
        self._clock = clock
        self.max_limit = settings.max_concurrency or DEFAULT_MAX_CONCURRENCY
        self.limit = float(settings.initial_concurrency or min(self.max_limit, DEFAULT_INITIAL_CONCURRENCY))
        self.in_flight = 0
        self.throttled_s = 0.0  # seconds callers waited for a permit, summed over callers
        self.paused_until = 0.0
        self.share = share
        now = clock()
        self._requests = _Bucket(settings.requests_per_minute, share, now) if settings.requests_per_minute else None
        self._tokens = _Bucket(settings.tokens_per_minute, share, now) if settings.tokens_per_minute else None
        self._slow_start = True
        self._epoch = 0  # bumped on each decrease: calls granted before it carry no news
        self._baseline: float | None = None
        self._recent: float | None = None
        self._waiters: deque[asyncio.Future[Permit]] = deque()
        # The dispatch timer and its due time (loop clock). The due time is kept here, not asked of the
        # handle: uvloop runs a delay under half a millisecond as call_soon, whose Handle has no when().
        self._timer: asyncio.Handle | None = None
        self._timer_due = 0.0
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    # -- callers ----------------------------------------------------------------------------------
    async def acquire(self) -> Permit:
        """A permit, once the limit, a pause and the rate buckets allow (first come, first served)."""
        if not self._waiters and self._blocked_for(self._clock()) == 0.0:
            return self._take()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Permit] = loop.create_future()
        self._waiters.append(future)
        began = self._clock()
        try:
            self._dispatch()
            return await future
        except BaseException:
            # Cancelled, or the dispatch failed: a waiter left in the queue would later be granted a
            # permit that nobody hands back, holding the endpoint one call lower for good.
            if future.done() and not future.cancelled():  # granted as the caller went away
                future.result().finish(None)
            else:
                self._forget(future)
            raise
        finally:
            self.throttled_s += self._clock() - began

    def would_wait(self) -> bool:
        """Whether a call made now would wait for a permit (the endpoint is over its limit)."""
        return bool(self._waiters) or self._blocked_for(self._clock()) != 0.0

    def set_share(self, share: float) -> None:
        """This process's part of the fleet-wide rates (owned partitions / all partitions)."""
        self.share = share
        now = self._clock()
        for bucket in (self._requests, self._tokens):
            if bucket is not None:
                bucket.set_share(share, now)
        self._dispatch()

    def status(self) -> LimiterStatus:
        return LimiterStatus(self.url, int(self.limit), self.in_flight, self.throttled_s, self.share)

    # -- grants -------------------------------------------------------------------------------------
    def _blocked_for(self, now: float) -> float | None:
        """None while all permits are out (a release wakes the waiters), else seconds until one may go."""
        if self.in_flight >= int(self.limit):
            return None
        wait = max(0.0, self.paused_until - now)
        if self._requests is not None:
            wait = max(wait, self._requests.wait_s(now, 1.0))
        if self._tokens is not None:
            wait = max(wait, self._tokens.wait_s(now, 0.0))
        return wait

    def _take(self) -> Permit:
        self.in_flight += 1
        if self._requests is not None:
            self._requests.level -= 1.0
        return Permit(self, self._epoch, self._clock(), self.in_flight)

    def _dispatch(self) -> None:
        """Grant permits to waiters in order while allowed; else wake up when the blocking time is over."""
        while self._waiters:
            future = self._waiters[0]
            if future.done():
                self._waiters.popleft()
                continue
            wait = self._blocked_for(self._clock())
            if wait is None:
                return
            if wait > 0.0:
                self._wake_in(wait)
                return
            self._waiters.popleft()
            future.set_result(self._take())

    def _wake_in(self, seconds: float) -> None:
        if math.isinf(seconds):
            return  # a zero rate: set_share wakes the waiters
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        due = loop.time() + seconds
        if self._timer is not None and self._timer_loop is loop:
            if self._timer_due <= due:
                return
            self._timer.cancel()  # the wait got shorter (a larger share)
        self._timer_loop = loop
        self._timer_due = due
        self._timer = loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()

    def _forget(self, future: asyncio.Future[Permit]) -> None:
        try:
            self._waiters.remove(future)
        except ValueError:
            pass

    # -- feedback -----------------------------------------------------------------------------------
    def _release(self, permit: Permit, error: BaseException | None, tokens: int) -> None:
        self.in_flight -= 1
        now = self._clock()
        if tokens and self._tokens is not None:
            self._tokens.refill(now)
            self._tokens.level -= tokens
        if error is None:
            self._succeeded(permit, now - permit.started)
        elif isinstance(error, TransientError) and error.kind in OVERLOAD_KINDS:
            self._overloaded(permit, now, error.retry_after_s)
        self._dispatch()

    def _succeeded(self, permit: Permit, latency: float) -> None:
        baseline = self._baseline
        # The baseline follows the fastest answers, and drifts up slowly so a lasting change is learned.
        self._baseline = latency if baseline is None or latency < baseline else baseline + (latency - baseline) * 0.002
        self._recent = latency if self._recent is None else self._recent + (latency - self._recent) * 0.2
        flat = self._recent <= self._baseline * LATENCY_TOLERANCE + LATENCY_SLACK_S
        if not flat:
            if self._recent > self._baseline * 2 * LATENCY_TOLERANCE + LATENCY_SLACK_S:
                self._decrease(permit)  # queueing at the endpoint: back off before it refuses
            return
        if permit.epoch != self._epoch or permit.load * 2 < self.limit:
            return  # granted before the last decrease, or the limit was not in use: no news
        step = 1.0 if self._slow_start else 1.0 / self.limit
        self.limit = min(float(self.max_limit), self.limit + step)

    def _overloaded(self, permit: Permit, now: float, retry_after_s: float | None) -> None:
        if retry_after_s:
            self.paused_until = max(self.paused_until, now + min(retry_after_s, RETRY_AFTER_MAX_S))
        self._slow_start = False
        self._decrease(permit)

    def _decrease(self, permit: Permit) -> None:
        if permit.epoch != self._epoch:
            return  # granted before the last decrease: that one already answered for it
        self._epoch += 1
        self.limit = max(float(MIN_CONCURRENCY), self.limit * BACKOFF_RATIO)


class LimiterRegistry:
    """The limiters of this process, by redacted endpoint URL, and this process's share of fleet rates."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._limiters: dict[str, EndpointLimiter] = {}
        self.share = 1.0  # alone until a driver says otherwise

    def limiter(self, url: str, settings: LimitSettings) -> EndpointLimiter:
        """The limiter of ``url`` (created on first use; the first caller's settings are kept)."""
        key = redact_url(url)
        with self._lock:
            found = self._limiters.get(key)
            if found is None:
                found = self._limiters[key] = EndpointLimiter(key, settings, self.share)
            elif found.settings != settings:
                logger.warning("model endpoint %s has limits from two connections; keeping %s, ignoring %s",
                               key, found.settings, settings)
            return found

    def set_share(self, owned: int, total: int) -> None:
        """This process owns ``owned`` of ``total`` partitions: it may use that part of each fleet rate."""
        share = owned / total if total > 0 else 1.0
        with self._lock:
            self.share = share
            limiters = list(self._limiters.values())
        for limiter in limiters:
            limiter.set_share(share)

    def statuses(self) -> list[LimiterStatus]:
        with self._lock:
            return [limiter.status() for limiter in self._limiters.values()]

    def clear(self) -> None:
        """Forget every limiter (tests)."""
        with self._lock:
            self._limiters.clear()
            self.share = 1.0


#: The process's registry: connections are built as plan resources, away from any driver.
endpoint_limits = LimiterRegistry()
