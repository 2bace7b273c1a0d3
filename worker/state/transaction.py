"""A checkpoint's share of state: key states sent to the changelog in the Kafka transaction, then
written to each partition's store once that transaction committed.

This is where "the store is never ahead of the changelog" is enforced: :meth:`flush` is the only
path from a checkpoint to a store, it refuses to run before the changelog records were delivered,
and the checkpoint calls it only after the commit (worker/checkpoint/checkpoint.py). The store then
records the changelog offset it is in step with, which restore starts from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from worker.state.store import PartitionStore

__all__ = ["ProduceFn", "StateTransaction"]

#: ``produce(topic, value, key=..., partition=..., on_delivery=...)``: the checkpoint's producer.
ProduceFn = Callable[..., None]


class StateTransaction:
    """The key states one checkpoint changes, per changelog partition."""

    def __init__(self, changelog_topic: str) -> None:
        self.changelog_topic = changelog_topic
        self._states: dict[int, dict[bytes, bytes | None]] = {}
        self._offsets: dict[int, int] = {}  # partition -> offset of its last changelog record, once delivered
        self._prepared = False

    def update(self, partition: int, key: bytes, state: bytes | None) -> None:
        """A key's new state (None deletes it); the last update of a key in a checkpoint wins."""
        states = self._states.setdefault(partition, {})
        states.pop(key, None)  # keep the order of last updates, which the changelog gets
        states[key] = state

    @property
    def partitions(self) -> list[int]:
        return list(self._states)

    def prepare(self, produce: ProduceFn) -> None:
        """Produce the changelog records (inside the open Kafka transaction).

        Only each partition's last record asks for a delivery report: the idempotent producer keeps
        a partition's order, so its offset covers the others (a report per record cost a GIL round
        trip each).
        """
        for partition, states in self._states.items():
            last = len(states) - 1
            for i, (key, state) in enumerate(states.items()):
                produce(self.changelog_topic, state, key=key, partition=partition,
                        on_delivery=self._delivered if i == last else None)
        self._prepared = True

    def _delivered(self, err: Any, msg: Any) -> None:  # runs inside the producer's flush()
        if err is None:
            self._offsets[msg.partition()] = msg.offset()

    def flush(self, stores: Mapping[int, PartitionStore | None]) -> None:
        """Write the states to the stores, with the changelog offsets they are now in step with.

        Call only after the Kafka transaction committed. Partitions revoked meanwhile (no store) are
        skipped: their next owner restores from the changelog.
        """
        if not self._prepared:
            raise RuntimeError("state flushed before its changelog records were produced")
        for partition, states in self._states.items():
            store = stores.get(partition)
            if store is None:
                continue
            if partition not in self._offsets:
                raise RuntimeError(f"changelog partition {partition} committed without a delivery report")
            store.apply(states, self._offsets[partition])
