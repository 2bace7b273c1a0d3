"""`--key-field`: records re-keyed through `<app-id>-repartition` in the same transaction."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

from tests.worker.integration.harness import header, read_all

pytestmark = pytest.mark.integration


def test_one_logical_key_spread_over_partitions_keeps_one_state(kafka, worker_factory, app_id):
    partitions, keys, per_key = 4, 6, 8
    input_topic = kafka.new_topic("rekey-in", partitions=partitions)
    output_topic = kafka.new_topic("rekey-out", partitions=partitions)
    worker = worker_factory("tests.worker.integration.agents:CountingAgent", input_topic, output_topic, app_id,
                            extra_args=["--key-field", "key"])
    worker.wait_ready(min_partitions=2 * partitions)
    records = []
    for seq in range(per_key):
        for k in range(keys):
            # Arbitrary message keys (some none) scatter each logical key over every partition.
            records.append((None if seq % 3 == 0 else f"msg-{seq}-{k}",
                            json.dumps({"key": f"user{k}", "seq": seq})))
    for i, (key, value) in enumerate(records):
        kafka.produce(input_topic, [(key, value)], partition=i % partitions)
    outputs = read_all(kafka.bootstrap_servers, output_topic, partitions, expected=len(records))
    assert len(outputs) == len(records), worker.log()
    counts = defaultdict(list)
    for m in outputs:
        value = json.loads(m.value())
        assert m.key().decode() == value["key"]
        assert header(m, "agentfleet.source.topic") == f"{app_id}-repartition"
        counts[value["key"]].append(value["count"])
    assert {k: sorted(v) for k, v in counts.items()} == {f"user{k}": list(range(1, per_key + 1))
                                                        for k in range(keys)}
    assert worker.terminate() == 0
