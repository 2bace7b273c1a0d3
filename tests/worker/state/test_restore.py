"""State restore against a real broker (the session ``kafka`` fixture; embedded Tansu by default).

Tansu reports a wrong end offset to ListOffsets (start of the last batch + 1; 0 to read_committed
readers while a transaction is open), so these tests write changelogs in batches and with open
transactions: the restore must read to the end the fetches report and must not wipe a store
because of either value.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from tests.kafka_support import KafkaCluster, consumer_config, producer_config
from worker.exceptions import StateRestoreError
from worker.state.restore import RestoreResult, restore_partition
from worker.state.store import PartitionStore


def _restore(kafka: KafkaCluster, path: Path, topic: str, **kwargs: float) -> RestoreResult:
    config = consumer_config(kafka.bootstrap_servers, f"restore-{uuid.uuid4().hex[:8]}")
    return restore_partition(path, topic, 0, config, **kwargs)


def _batched(kafka: KafkaCluster, topic: str, keys: range, prefix: bytes = b"v") -> list[int]:
    """Write k<i> -> <prefix><i> non-transactionally, many records per batch (at-least-once changelog)."""
    producer = Producer(producer_config(kafka.bootstrap_servers, linger_ms=100, batch_num_messages=10_000))
    offsets: list[int] = []
    for i in keys:
        producer.produce(topic, key=b"k%d" % i, value=prefix + b"%d" % i, partition=0,
                         on_delivery=lambda err, msg: offsets.append(msg.offset()) if err is None else None)
    assert producer.flush(30) == 0
    assert len(offsets) == len(keys)
    return sorted(offsets)


class _Transaction:
    """A transactional producer with records written but not committed: what a killed owner leaves."""

    def __init__(self, kafka: KafkaCluster, topic: str, keys: range, prefix: bytes) -> None:
        self.producer = Producer(producer_config(kafka.bootstrap_servers, transactional_id=f"t-{uuid.uuid4().hex}",
                                                 linger_ms=20))
        self.producer.init_transactions(30)
        self.producer.begin_transaction()
        self.offsets: list[int] = []
        for i in keys:
            self.producer.produce(topic, key=b"k%d" % i, value=prefix + b"%d" % i, partition=0,
                                  on_delivery=lambda err, msg: self.offsets.append(msg.offset()))
        assert self.producer.flush(30) == 0

    def commit(self) -> None:
        self.producer.commit_transaction(30)

    def abort(self) -> None:
        self.producer.abort_transaction(30)


@pytest.fixture()
def changelog(kafka: KafkaCluster) -> Iterator[str]:
    yield kafka.new_topic("restore-changelog")


def _contents(store: PartitionStore) -> dict[bytes, bytes | None]:
    return {key: store.get(key) for key in store.keys()}


def test_batched_changelog_restores_every_record(kafka: KafkaCluster, changelog: str, tmp_path: Path):
    offsets = _batched(kafka, changelog, range(200))
    result = _restore(kafka, tmp_path / "p0", changelog)
    assert (result.records, result.rebuilt) == (200, False)
    assert _contents(result.store) == {b"k%d" % i: b"v%d" % i for i in range(200)}
    assert result.store.changelog_offset() == offsets[-1]
    result.store.close()

    # A second batched run on top: only the tail is read, the store's own last record re-read as proof.
    more = _batched(kafka, changelog, range(150, 300), prefix=b"w")
    again = _restore(kafka, tmp_path / "p0", changelog)
    assert (again.records, again.rebuilt) == (150, False)
    assert _contents(again.store) == {**{b"k%d" % i: b"v%d" % i for i in range(150)},
                                      **{b"k%d" % i: b"w%d" % i for i in range(150, 300)}}
    assert again.store.changelog_offset() == more[-1]
    again.store.close()


def test_store_is_kept_and_committed_tail_restored_while_a_transaction_is_open(
        kafka: KafkaCluster, changelog: str, tmp_path: Path):
    offsets = _batched(kafka, changelog, range(10))
    store = PartitionStore(tmp_path / "p0")
    store.apply({b"k%d" % i: b"v%d" % i for i in range(5)}, offsets[4])  # applied up to the 5th record
    store.close()
    hung = _Transaction(kafka, changelog, range(100, 105), b"open")  # the previous owner was killed here
    try:
        result = _restore(kafka, tmp_path / "p0", changelog, open_transaction_wait_s=30.0)
        # Not wiped; the committed records before the open transaction are applied, its records not.
        assert (result.records, result.rebuilt) == (5, False)
        assert _contents(result.store) == {b"k%d" % i: b"v%d" % i for i in range(10)}
        assert result.store.changelog_offset() == offsets[9]
        result.store.close()
    finally:
        hung.abort()


def test_store_past_an_open_transaction_is_kept_then_catches_up_when_it_ends(
        kafka: KafkaCluster, changelog: str, tmp_path: Path):
    """The store applied records committed after another owner's open transaction (LSO below the store)."""
    _batched(kafka, changelog, range(5))
    hung = _Transaction(kafka, changelog, range(100, 103), b"open")
    later = _Transaction(kafka, changelog, range(5, 10), b"v")
    later.commit()
    store = PartitionStore(tmp_path / "p0")
    store.apply({b"k%d" % i: b"v%d" % i for i in range(10)}, later.offsets[-1])
    store.close()
    try:
        # read_committed cannot see the store's last record: kept as it is once the wait is over.
        started = time.monotonic()
        kept = _restore(kafka, tmp_path / "p0", changelog, open_transaction_wait_s=1.0)
        assert time.monotonic() - started < 20
        assert (kept.records, kept.rebuilt) == (0, False)
        assert _contents(kept.store) == {b"k%d" % i: b"v%d" % i for i in range(10)}
        kept.store.close()

        # Waiting is bounded by the restore's own time limit too; a failed restore releases the store.
        with pytest.raises(StateRestoreError, match="exceeded"):
            _restore(kafka, tmp_path / "p0", changelog, timeout_s=1.0, open_transaction_wait_s=60.0)

        # A third owner committed more after the store's offset; the hung transaction then ends (its
        # producer came back and aborted it) just after the restore started: the tail is applied.
        third = _Transaction(kafka, changelog, range(10, 13), b"third")
        third.commit()
        result: list[RestoreResult] = []
        waiting = threading.Thread(target=lambda: result.append(
            _restore(kafka, tmp_path / "p0", changelog, open_transaction_wait_s=30.0)))
        waiting.start()
        hung.abort()
        waiting.join(60)
        assert not waiting.is_alive() and result
        assert (result[0].records, result[0].rebuilt) == (3, False)
        assert _contents(result[0].store) == {**{b"k%d" % i: b"v%d" % i for i in range(10)},
                                              **{b"k%d" % i: b"third%d" % i for i in range(10, 13)}}
        result[0].store.close()
    finally:
        try:
            hung.abort()
        except Exception:  # noqa: BLE001 - already aborted above
            pass


@pytest.mark.parametrize("new_records", [0, 5, 19])
def test_store_ahead_of_a_recreated_changelog_is_rebuilt(kafka: KafkaCluster, changelog: str, tmp_path: Path,
                                                         new_records: int):
    _batched(kafka, changelog, range(20))
    first = _restore(kafka, tmp_path / "p0", changelog)
    assert first.records == 20
    first.store.close()
    kafka.admin.delete_topics([changelog])
    kafka.admin.create_topic(changelog, 1)
    _batched(kafka, changelog, range(new_records), prefix=b"new")
    result = _restore(kafka, tmp_path / "p0", changelog)
    assert (result.records, result.rebuilt) == (new_records, True)
    assert _contents(result.store) == {b"k%d" % i: b"new%d" % i for i in range(new_records)}
    result.store.close()


def test_transactional_changelog_excludes_aborted_records(kafka: KafkaCluster, changelog: str, tmp_path: Path):
    if not kafka.hides_aborted:
        pytest.skip("the embedded broker delivers aborted records to read_committed consumers (BROKER.md)")
    committed = _Transaction(kafka, changelog, range(10), b"v")
    committed.commit()
    aborted = _Transaction(kafka, changelog, range(5, 15), b"aborted")
    aborted.abort()
    tail = _Transaction(kafka, changelog, range(15, 20), b"v")
    tail.commit()
    result = _restore(kafka, tmp_path / "p0", changelog)
    assert result.records == 15
    assert _contents(result.store) == {b"k%d" % i: b"v%d" % i for i in [*range(10), *range(15, 20)]}
    result.store.close()
