"""Exceptions raised by the worker runtime.

Everything derives from :class:`WorkerError` so callers (the CLI, tests) can catch
the runtime's own failures without swallowing unrelated bugs.
"""

from __future__ import annotations

__all__ = [
    "WorkerError",
    "ConfigurationError",
    "BrokerUnavailableError",
    "KafkaAuthorizationError",
    "EmbeddedBrokerError",
    "StateStoreError",
    "StateRestoreError",
    "BrokerUnreachableError",
]


class WorkerError(Exception):
    """Root of every error the worker package raises on purpose."""


class ConfigurationError(WorkerError):
    """A setting is missing or wrong; the message always names the setting.

    Naming the setting lets an operator fix the deployment without reading code.
    """

    def __init__(self, setting: str, message: str) -> None:
        self.setting = setting
        self.message = message
        super().__init__(f"{setting}: {message}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # Keep the two-argument constructor working across pickling (multiprocessing).
        return (type(self), (self.setting, self.message))


class BrokerUnavailableError(ConfigurationError):
    """No Kafka broker answered at the configured bootstrap servers in time."""


class KafkaAuthorizationError(ConfigurationError):
    """The broker's authorizer refused an operation: an ACL the worker needs is missing.

    The setting is ``kafka ACL`` and the message names the principal, each operation and resource it
    lacks, and the broker's error code (see README "Security: ACLs the worker needs").
    """


class EmbeddedBrokerError(WorkerError):
    """The embedded (Tansu) broker could not be found, started or stopped."""


class StateStoreError(WorkerError):
    """The local state directory cannot be written (disk full, I/O error, store locked).

    Committed state is safe in the changelog; the worker exits rather than running on a store
    it cannot keep in step, and a restart (or another worker) restores the missing tail.
    """


class StateRestoreError(WorkerError):
    """Restoring a partition's state from its changelog failed (consumer error, or it took too long)."""


class BrokerUnreachableError(WorkerError):
    """Kafka stayed unreachable mid-run for longer than ``broker-unreachable-timeout-s``."""
