"""Short-term memory TTL on the worker over Apache Kafka: an expired key's state is deleted with a
changelog tombstone, and a worker restoring from the changelog does not bring it back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.worker.integration.harness import TopicTail, read_all, wait_for
from worker.operator_tools import list_keys

pytestmark = pytest.mark.integration

AGENT = "tests.worker.integration.flink03_agents:VisitCountingAgent"
# Flink's config.yaml layout (the agent: section, nested keys); visibility RETURN_EXPIRED_IF_NOT_CLEANED_UP
# makes a state that was not deleted visible to the next run, so the counts show whether it was.
CONFIG = """\
agent:
  short-term-memory:
    state-ttl:
      ms: 1500
      update-type: ON_CREATE_AND_WRITE
      visibility: RETURN_EXPIRED_IF_NOT_CLEANED_UP
"""


def test_expired_state_is_tombstoned_and_not_restored(kafka, worker_factory, app_id, tmp_path: Path):
    input_topic = kafka.new_topic("visits-in", partitions=2)
    output_topic = kafka.new_topic("visits-out", partitions=2)
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    args = ["--agent-config", str(config)]
    first = worker_factory(AGENT, input_topic, output_topic, app_id, instance_id="a", extra_args=args)
    first.wait_ready(min_partitions=2)
    changelog = TopicTail(kafka.bootstrap_servers, f"{app_id}-state-changelog", 2).start()
    try:
        kafka.produce(input_topic, [(k, json.dumps({"id": k})) for k in ("k1", "k2")])
        outputs = read_all(kafka.bootstrap_servers, output_topic, 2, expected=2)
        assert sorted(json.loads(m.value())["visits"] for m in outputs) == [1, 1], first.log()

        def tombstoned() -> set[str]:
            return {m.key().decode() for m in changelog.records if m.value() is None}

        assert wait_for(lambda: tombstoned() == {"k1", "k2"}, timeout_s=30), first.log()
        kafka.produce(input_topic, [("k1", json.dumps({"id": "k1"}))])
        outputs = read_all(kafka.bootstrap_servers, output_topic, 2, expected=3)
        assert [json.loads(m.value()) for m in outputs if m.key() == b"k1"][-1] == {"id": "k1", "visits": 1}
        # The agent's own counter, on /metrics: agentfleet_user_metric{scope="action.count_visit",name="visits",...}
        assert first.metric("agentfleet_user_metric") == 3
        assert first.terminate() == 0, first.log()
    finally:
        changelog.stop()

    # A worker with an empty state dir restores from the changelog: k2's tombstone keeps it out. (No TTL
    # there: its own sweep would delete k1 too, and hide whether the restore brought k2 back.)
    fresh = tmp_path / "fresh-state"
    second = worker_factory(AGENT, input_topic, output_topic, app_id, instance_id="b", state_dir=fresh)
    second.wait_ready(min_partitions=2)
    assert second.metric("agentfleet_restore_records_total") >= 3  # two states, a tombstone at least
    assert sorted(list_keys(fresh, app_id)) == ["k1"]
    assert second.terminate() == 0, second.log()
