"""Which chat model setup answers a call: the requested one, or one of its ``fallback`` setups.

A setup declared with ``fallback=["setup_b", ...]`` hands a call to the first of those that is
available when its own endpoint is not: down (:mod:`agentplan.endpoints`: failed requests in a
row) or over its limit (:mod:`agentplan.limits`: all permits out, paused by a ``Retry-After``, or
past its rate share). A call that fails transiently and leaves its endpoint unavailable moves on to
the next available setup at once, without the engine's backoff; otherwise the engine retries as
usual. Only the requested setup's list counts (fallbacks of fallbacks are not followed). A down
endpoint still gets one call per ``PROBE_INTERVAL_S``, so that its answer brings it back.

The answer is journaled with the name of the setup that gave it (``ChatResult.fallback``): a replay
after a crash reuses that answer, so the run goes on with the model the committed attempt used.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from agentplan.chat_models import BaseChatModelConnection, BaseChatModelSetup
from agentplan.exceptions import ResourceError

__all__ = ["PROBE_INTERVAL_S", "Candidate", "candidates", "is_available", "pick"]

PROBE_INTERVAL_S = 5.0
_last_probe: weakref.WeakKeyDictionary[BaseChatModelConnection, float] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Candidate:
    name: str
    setup: BaseChatModelSetup


def candidates(name: str, setup: BaseChatModelSetup,
               lookup: Callable[[str], object]) -> list[Candidate]:
    """The requested setup, then its fallbacks in order."""
    found = [Candidate(name, setup)]
    for fallback_name in setup.fallback:
        fallback = lookup(fallback_name)
        if not isinstance(fallback, BaseChatModelSetup):
            raise ResourceError(f"fallback {fallback_name!r} of {name!r} is not a chat model setup")
        found.append(Candidate(fallback_name, fallback))
    return found


def _up(connection: BaseChatModelConnection, probe: bool) -> bool:
    if not connection.is_down():
        if _last_probe:
            _last_probe.pop(connection, None)
        return True
    if not probe:
        return False
    now = time.monotonic()
    last = _last_probe.setdefault(connection, now)  # first seen down: the first probe is due in an interval
    if now - last >= PROBE_INTERVAL_S:
        _last_probe[connection] = now  # this call is the probe
        return True
    return False


def is_available(setup: BaseChatModelSetup, probe: bool = False) -> bool:
    """Up (or due for a probe) and a call would get a permit at once."""
    connection = setup.connection
    if not _up(connection, probe):
        return False
    limiter = connection.limiter()
    return limiter is None or not limiter.would_wait()


def pick(options: list[Candidate], tried: set[str]) -> Candidate | None:
    """The first available candidate not tried yet; before any try, else the first one up, else the
    requested one (a call then waits for a permit or fails, and the engine retries)."""
    fresh = [c for c in options if c.name not in tried]
    for candidate in fresh:
        if is_available(candidate.setup, probe=True):
            return candidate
    if tried:
        return None
    for candidate in fresh:
        if not candidate.setup.connection.is_down():
            return candidate
    return options[0]
