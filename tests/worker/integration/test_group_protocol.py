"""The KIP-848 consumer group protocol under load: scale out from one worker to two, then SIGKILL the first.

``consumer`` is KIP-848 (Kafka 4+), where the broker assigns partitions and the 6 s session is the
group's ``consumer.session.timeout.ms``. The default ``classic`` protocol (cooperative-sticky) goes
through the same join and SIGKILL, and a SIGTERM, in test_chaos.py. The chaos runner (chaos.py) checks exactly-once record
by record: none lost, none repeated, per-key order and counts, no committed LLM call repeated.

The test prints its timings (``pytest -rP`` shows them):

* ``scale_out_first_output_s``: from starting the second worker until its first output;
* ``scale_out_pause_s``: the longest a partition it took over went without output;
* ``failover_s``: from the SIGKILL until every partition of the victim has output again.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kafka_support import KafkaCluster
from tests.worker.integration.chaos import ChaosConfig, ChaosEvent, run_chaos_on, violations

pytestmark = pytest.mark.integration

# The second worker joins 2 s into the load; the first is killed once both hold partitions (the runner
# waits for a settled group before each event). The load runs for 30 s, so input keeps arriving on the
# victim's partitions after the takeover even when a loaded machine delays the kill by many seconds.
SCHEDULE = [ChaosEvent(2, "join", "w2"), ChaosEvent(8, "crash", "w1")]
SESSION_S = 6.0


@pytest.mark.parametrize("group_protocol", ["consumer"])
def test_scale_out_and_sigkill_are_exactly_once(kafka: KafkaCluster, tmp_path: Path, app_id: str,
                                                group_protocol: str) -> None:
    if group_protocol == "consumer" and kafka.kind in ("embedded", "testcontainers"):
        pytest.skip("KIP-848 groups need Kafka 4: neither Tansu nor the testcontainers image (Kafka 3.6) has them")
    config = ChaosConfig(partitions=4, records=2400, keys=160, workers=1, rate_per_s=80.0,
                         group_protocol=group_protocol, schedule=SCHEDULE)

    report = run_chaos_on(kafka, config, app_id, tmp_path)

    assert violations(report) == [], {k: report[k] for k in ("lost_examples", "duplicate_examples",
                                                              "excused_transactions", "incarnations")}
    assert report["distinct_outputs"] == config.records
    join, crash = report["events"]
    assert join["partitions"] and join["first_output_s"] is not None and join["pause_s"] is not None, join
    assert crash["actual_s"] + SESSION_S < config.production_s, f"killed too late to measure a takeover: {crash}"
    assert crash["partitions"] and crash["recovery_s"] is not None, crash
    print(f"{group_protocol}: scale_out_first_output_s={join['first_output_s']} "
          f"scale_out_pause_s={join['pause_s']} failover_s={crash['recovery_s']}")
