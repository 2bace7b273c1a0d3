"""Short-term memory TTL, Flink Agents 0.3's ``short-term-memory.state-ttl.*`` settings.

Granularity is the key: a key's short-term memory carries one timestamp (``"t"`` in its state, wall
clock ms), renewed by writes (ON_CREATE_AND_WRITE) or by reads and writes (ON_READ_AND_WRITE), and set
when the key's first run starts. Once ``state-ttl.ms`` has passed since, the memory is expired:

* NEVER_RETURN_EXPIRED: the key's next run starts with empty memory, cleaned up or not;
* RETURN_EXPIRED_IF_NOT_CLEANED_UP: the next run still sees it unless a cleanup ran first.

Cleanup deletes the whole key state: the local runner at the start of ``execute()``, the Kafka worker
in a periodic sweep that commits a changelog tombstone (worker/state/expiry.py), so compaction drops
the key and no restore brings it back. Keys with a run in progress never expire.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, Protocol

from agentplan.config import AgentConfiguration, ShortTermMemoryTtlUpdate, ShortTermMemoryTtlVisibility

Hook = Callable[[], None]


class _TtlSlot(Protocol):
    touched_ms: int | None


def now_ms() -> int:
    return int(time.time() * 1000)


class ShortTermMemoryTtl:
    def __init__(self, ttl_ms: int, renew_on_read: bool, return_expired: bool) -> None:
        self.ttl_ms = ttl_ms
        self.renew_on_read = renew_on_read
        self.return_expired = return_expired

    @classmethod
    def from_config(cls, config: AgentConfiguration) -> ShortTermMemoryTtl | None:
        """None when the TTL is off (0), so the engine pays nothing for it."""
        if not config.short_term_memory_state_ttl_ms:
            return None
        return cls(config.short_term_memory_state_ttl_ms,
                   config.short_term_memory_state_ttl_update_type is ShortTermMemoryTtlUpdate.ON_READ_AND_WRITE,
                   config.short_term_memory_state_ttl_visibility
                   is ShortTermMemoryTtlVisibility.RETURN_EXPIRED_IF_NOT_CLEANED_UP)

    def hooks(self, slot: _TtlSlot, guard: Hook, before_write: Hook) -> tuple[Hook, Hook]:
        """The memory hooks, renewing the slot's timestamp on access (guard) or write (before_write)."""
        if self.renew_on_read:
            def renewing_guard() -> None:
                guard()
                slot.touched_ms = now_ms()

            return renewing_guard, before_write

        def renewing_write() -> None:
            before_write()
            slot.touched_ms = now_ms()

        return guard, renewing_write

    def expired(self, touched_ms: int | None, at_ms: int) -> bool:
        return touched_ms is not None and at_ms - touched_ms > self.ttl_ms

    def visible_memory_expired(self, slot: _TtlSlot) -> bool:
        """At a run's start: whether the key's memory must be dropped first (and stamps a new key)."""
        at = now_ms()
        if slot.touched_ms is None:
            slot.touched_ms = at
            return False
        return not self.return_expired and self.expired(slot.touched_ms, at)

    def persisted_expired(self, raw: bytes, at_ms: int) -> tuple[bool, int | None]:
        """Whether an idle key's persisted state is expired, and the input position it has reached."""
        data: Any = json.loads(raw)
        if not isinstance(data, dict) or data.get("r") is not None:  # a run in progress never expires
            return False, None
        return self.expired(data.get("t"), at_ms), data.get("p")
