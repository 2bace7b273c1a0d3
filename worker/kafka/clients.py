"""The configuration of every Kafka client the worker makes, derived from its settings in one place.

The properties in :data:`worker.kafka.properties.RESERVED` are set here and nowhere else; users
cannot override them (settings refuse them), because each one carries a guarantee: read_committed
input, manual offsets, an idempotent transactional producer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from worker.config import GroupProtocol, ProcessingGuarantee, WorkerSettings
from worker.exceptions import ConfigurationError
from worker.kafka.properties import consumer_properties, producer_properties

__all__ = ["ClientConfigs", "heartbeat_interval_ms"]

HEARTBEATS_PER_SESSION = 10


def heartbeat_interval_ms(settings: WorkerSettings) -> int:
    """A tenth of the session timeout in effect (a ``session.timeout.ms`` passed through wins).

    The other members learn that one died only at their next heartbeat after its session expired,
    and the rebalance waits for the last of them to rejoin: up to two heartbeat intervals after the
    session timeout. Heartbeats every 2 s (a fifth of the setting, while 6 s was passed through)
    made that up to 4 s of the 11 s S6 failover (measured on the wire).
    """
    raw = settings.kafka.get("session.timeout.ms", settings.session_timeout_ms)
    try:
        session_ms = int(raw)
    except (TypeError, ValueError):
        raise ConfigurationError("kafka.session.timeout.ms", f"{raw!r} is not a number of milliseconds") from None
    return max(100, session_ms // HEARTBEATS_PER_SESSION)


class ClientConfigs:
    """librdkafka configurations for the worker's consumer, producer and restore consumers."""

    def __init__(self, settings: WorkerSettings, error_cb: Callable[[Any], None] | None = None) -> None:
        self.settings = settings
        self.error_cb = error_cb

    def base(self) -> dict[str, Any]:
        # Nagle off (librdkafka leaves it on): small fetches and commits otherwise wait on delayed
        # ACKs, tens of ms per hop measured on the embedded broker. A user setting still wins.
        config: dict[str, Any] = {"bootstrap.servers": self.settings.bootstrap_servers, "socket.nagle.disable": True,
                                  **self.settings.kafka}
        if self.error_cb is not None:
            config["error_cb"] = self.error_cb
        return config

    def consumer(self) -> dict[str, Any]:
        s = self.settings
        classic = s.group_protocol is GroupProtocol.CLASSIC
        # A classic member sets its own session (a passed-through session.timeout.ms wins). Under KIP-848
        # the broker owns session and heartbeats, and librdkafka refuses these properties.
        session = {"session.timeout.ms": s.session_timeout_ms,
                   "heartbeat.interval.ms": heartbeat_interval_ms(s)} if classic else {}
        # Both assign incrementally, so the rebalance callbacks only ever see the partitions that move;
        # under KIP-848 the broker computes the (always sticky) assignment.
        assignment = {"partition.assignment.strategy": "cooperative-sticky"} if classic else \
            {"group.protocol": GroupProtocol.CONSUMER.value}
        return {
            "fetch.wait.max.ms": 10,
            **session,
            **consumer_properties(self.base()),
            "group.id": s.app_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            **assignment,
        }

    def producer(self) -> dict[str, Any]:
        s = self.settings
        config = {"linger.ms": 5, **producer_properties(self.base()), "enable.idempotence": True}
        if s.processing_guarantee is ProcessingGuarantee.EXACTLY_ONCE:
            config["transactional.id"] = s.transactional_id
            config["transaction.timeout.ms"] = s.transaction_timeout_ms
        return config

    def restore_consumer(self) -> dict[str, Any]:
        """For reading a changelog partition by assignment (no group membership, no commits)."""
        return {**consumer_properties(self.base()), "group.id": f"{self.settings.app_id}-restore",
                "fetch.wait.max.ms": 10}

    def decisions_consumer(self) -> dict[str, Any]:
        """For reading decisions partitions by assignment (offsets are committed in the worker's transactions)."""
        return {**consumer_properties(self.base()), "group.id": f"{self.settings.app_id}-decisions",
                "enable.auto.commit": False, "isolation.level": "read_committed", "fetch.wait.max.ms": 10}

    def offsets_reader(self) -> dict[str, Any]:
        """For looking up the group's committed offsets (the retention-gap check)."""
        return {**consumer_properties(self.base()), "group.id": self.settings.app_id}
