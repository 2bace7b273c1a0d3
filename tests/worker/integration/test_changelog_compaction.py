"""The changelog on a real broker is compacted, and a store restored from what is left equals the live one.

Only Apache Kafka compacts: the embedded Tansu broker keeps every changelog record (README, Limits).
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from tests.kafka_support import KafkaCluster, consumer_config
from tests.worker.integration.harness import assert_counts_continue, counted_round, wait_for
from tests.worker.integration.topic_probe import read_to_end
from worker.state.restore import restore_partition
from worker.state.store import PartitionStore

pytestmark = pytest.mark.integration

AGENT = "tests.worker.integration.agents:CountingAgent"
PARTITIONS = 2
KEYS = [f"k{i}" for i in range(6)]
ROUNDS = 12
# A segment rolls at the first append half a second after it began, and any dirty closed segment is
# cleaned (the test broker's cleaner wakes every second); tombstones and transaction markers go soon after.
COMPACTING = {"cleanup.policy": "compact", "segment.ms": "500", "min.cleanable.dirty.ratio": "0.01",
              "delete.retention.ms": "100"}


def _contents(store: PartitionStore) -> dict[bytes, bytes | None]:
    return {key: store.get(key) for key in store.keys()}


def test_store_restored_from_the_compacted_changelog_equals_the_live_one(
        kafka: KafkaCluster, worker_factory, app_id: str, tmp_path: Path):
    if not kafka.hides_aborted:
        pytest.skip("the embedded Tansu broker never compacts a changelog; this needs Apache Kafka")
    input_topic = kafka.new_topic("compact-in", partitions=PARTITIONS)
    output_topic = kafka.new_topic("compact-out", partitions=PARTITIONS)
    changelog = f"{app_id}-state-changelog"
    # Created beforehand: the worker takes an existing changelog as it is. With the broker's default
    # segment.ms (7 days) nothing would be compacted here, so compaction also proves the configs held.
    kafka.admin.create_topic(changelog, PARTITIONS, COMPACTING)
    state = tmp_path / "live"
    worker = worker_factory(AGENT, input_topic, output_topic, app_id, instance_id="c", state_dir=state)
    worker.wait_ready(min_partitions=PARTITIONS)
    for round_no in range(ROUNDS):
        counted_round(kafka, input_topic, output_topic, PARTITIONS, KEYS, round_no, worker)
    assert worker.terminate() == 0, worker.log()  # releases the live stores (RocksDB locks them)

    # Every round updates every key at least once (a run that spans two commits writes it twice).
    written = ROUNDS * len(KEYS)
    remaining: list[int] = []

    def compacted() -> bool:
        remaining.append(len(read_to_end(kafka.bootstrap_servers, changelog, PARTITIONS)))
        return remaining[-1] < written

    assert wait_for(compacted, timeout_s=60, interval_s=0.5), \
        f"changelog not compacted: {remaining[-1]} of at least {written} records left"

    config = consumer_config(kafka.bootstrap_servers, f"restore-{uuid.uuid4().hex[:8]}")
    restored_records = 0
    for partition in range(PARTITIONS):
        rebuilt = restore_partition(tmp_path / "rebuilt" / str(partition), changelog, partition, config)
        live = PartitionStore(state / app_id / str(partition))
        try:
            assert _contents(rebuilt.store) == _contents(live), partition
            assert _contents(live), partition  # every partition holds keys here (6 keys over 2 partitions)
            restored_records += rebuilt.records
        finally:
            rebuilt.store.close()
            live.close()
    assert restored_records < written

    # A worker without local state restores from the compacted changelog and every count goes on.
    shutil.rmtree(state)
    worker = worker_factory(AGENT, input_topic, output_topic, app_id, instance_id="c", state_dir=state)
    worker.wait_ready(min_partitions=PARTITIONS)
    messages = counted_round(kafka, input_topic, output_topic, PARTITIONS, KEYS, ROUNDS, worker)
    assert worker.terminate() == 0, worker.log()
    assert_counts_continue(messages, KEYS, rounds=ROUNDS + 1)
