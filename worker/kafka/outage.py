"""Noticing that Kafka is unreachable mid-run, waiting for it with back-off, giving up in time.

librdkafka reconnects on its own and never gives up, so the worker must decide how long an
outage may last. librdkafka reports "every broker connection is down" through the error
callback (``KafkaError._ALL_BROKERS_DOWN``) but reports nothing when a connection comes back,
so recovery is detected by an active metadata probe with exponential back-off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from confluent_kafka import KafkaError

from worker.exceptions import BrokerUnreachableError

logger = logging.getLogger(__name__)

PROBE_INITIAL_S = 0.5
PROBE_MAX_S = 5.0
TIMEOUT_SETTING = "broker-unreachable-timeout-s"
#: How a user sets it, for messages: the worker flag and its environment variable.
TIMEOUT_SOURCES = "--broker-unreachable-timeout-s / AGENTFLEET_BROKER_UNREACHABLE_TIMEOUT_S"


class BrokerWatch:
    """Tracks whether Kafka is reachable; the worker holds commits while it is not.

    ``probe`` runs in a thread and must raise when no broker answers (a metadata request).
    """

    def __init__(self, bootstrap_servers: str, timeout_s: float, probe: Callable[[], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.timeout_s = timeout_s
        self._probe = probe
        self._clock = clock
        self.down_since: float | None = None
        self._next_probe = 0.0
        self._backoff = PROBE_INITIAL_S
        self._probing: asyncio.Task[None] | None = None
        self._recovered = False

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def on_client_error(self, error: KafkaError) -> None:
        """librdkafka ``error_cb`` of the worker's consumer and producer."""
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            if self.down_since is None:
                self.down_since = self._clock()
                self._next_probe = self.down_since + PROBE_INITIAL_S
                self._backoff = PROBE_INITIAL_S
                logger.warning("Kafka at %s is unreachable (%s); holding commits, retrying for up to %gs (%s)",
                               self.bootstrap_servers, error.str(), self.timeout_s, TIMEOUT_SOURCES)
        elif error.fatal():
            logger.error("Kafka client fatal error: %s", error.str())
        else:
            # Connection refusals and the like repeat on every reconnect attempt.
            logger.debug("Kafka client error: %s", error.str())

    def take_recovery(self) -> bool:
        """True once after each outage ended (the caller renews what the outage may have broken)."""
        recovered, self._recovered = self._recovered, False
        return recovered

    def check(self) -> None:
        """Call from the event loop while ``down``: start a probe when due; raise past the deadline."""
        if self.down_since is None:
            return
        now = self._clock()
        if now - self.down_since > self.timeout_s:
            raise BrokerUnreachableError(
                f"{TIMEOUT_SETTING}: Kafka at {self.bootstrap_servers} has been unreachable for "
                f"{now - self.down_since:.0f}s (limit {self.timeout_s:g}s, {TIMEOUT_SOURCES}); exiting. "
                "Committed work is safe: "
                "a restarted worker resumes from the last committed transaction")
        if self._probing is None and now >= self._next_probe:
            self._probing = asyncio.get_running_loop().create_task(self._run_probe())

    async def _run_probe(self) -> None:
        try:
            await asyncio.to_thread(self._probe)
        except Exception as exc:  # noqa: BLE001 - any failure means: still unreachable
            self._backoff = min(self._backoff * 2, PROBE_MAX_S)
            self._next_probe = self._clock() + self._backoff
            logger.debug("Kafka still unreachable: %s; next probe in %.1fs", exc, self._backoff)
        else:
            if self.down_since is not None:
                logger.warning("Kafka at %s is reachable again after %.1fs; resuming commits",
                               self.bootstrap_servers, self._clock() - self.down_since)
            self.down_since = None
            self._recovered = True
        finally:
            self._probing = None
