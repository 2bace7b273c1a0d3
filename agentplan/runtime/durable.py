"""Journal entries of durable calls (``ctx.durable_execute``), beyond the recorded results.

A call given a ``reconciler`` is journaled twice: a *started* marker before it runs, then its result.
What "in flight with no committed result" means here: the key's journal is part of its state, which
the Kafka worker commits in the same transaction as the run's outputs and input offsets. The engine
waits for the marker to be committed before the call runs (``Engine.persisted``), so a worker killed
during the call leaves a committed marker and no result, and the replay on the next owner calls the
reconciler instead of the function. Without a reconciler nothing is written before the call, which
then simply runs again on replay (the recorded-result guarantee covers every call that finished and
was committed). A call that raises removes its marker: its outcome is known, and the action's error
handling decides what happens next.
"""

from __future__ import annotations

from typing import Any

from agentplan import codec

_STARTED_TAG = "__agentplan_durable_started__"
#: The journal entry of a reconciled call that has started and not finished.
STARTED: dict[str, Any] = {_STARTED_TAG: True}


def is_started(entry: Any) -> bool:
    return isinstance(entry, dict) and entry.get(_STARTED_TAG) is True and len(entry) == 1


#: Set (True) on a durable function whose result nothing changes after the call, such as the built-in chat
#: action's model call: the engine journals that result unencoded and encodes it only when a state snapshot
#: or a replay needs it. Most never need it (the journal is cleared when the action ends, usually before
#: the next snapshot), and encoding a model answer cost ~2 us per call.
UNCHANGED_RESULT = "_agentplan_unchanged_result"


class Unencoded:
    """A journal entry kept as the call returned it (see UNCHANGED_RESULT); already checked storable."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def encode_entries(journal: dict[str, Any]) -> dict[str, Any]:
    """``journal`` with every entry in its stored form (entries kept unencoded are encoded in place)."""
    for key, entry in journal.items():
        if type(entry) is Unencoded:
            journal[key] = codec.encode(entry.value)  # a value replaced, no key added: iteration stays valid
    return journal
