"""Issue 6, deliverable 1 (quick variant): a busy fleet through a SIGKILL, a SIGTERM and a join.

The full run is ``python -m bench.chaos``; both use tests/worker/integration/chaos.py, whose docstring
says what each figure means and how duplicates on the embedded broker are traced.
"""

from __future__ import annotations

import pytest

from agentplan.testing.llm_stub import StubLLMServer
from tests.second_reader import output_copies, read_topic_to_end
from tests.worker.integration.chaos import CallLedger, ChaosConfig, ChaosEvent, run_chaos, violations

pytestmark = pytest.mark.integration


def test_quick_chaos_run_keeps_every_invariant(kafka, tmp_path, app_id):
    # 40 s of input: the three events fit before the quiet tail even when the group settles slowly.
    config = ChaosConfig(partitions=12, records=3200, keys=200, workers=3, rate_per_s=80,
                         schedule=[ChaosEvent(4, "kill", "w1"), ChaosEvent(9, "term", "w2"),
                                   ChaosEvent(13, "join", "w4")])
    input_topic = kafka.new_topic("chaos-in", partitions=config.partitions)
    output_topic = kafka.new_topic("chaos-out", partitions=config.partitions)
    ledger = CallLedger()
    with StubLLMServer(responder=ledger, latency_ms=config.llm_latency_ms) as stub:
        report = run_chaos(config, kafka.bootstrap_servers, input_topic, output_topic, f"{input_topic}-dlq", app_id,
                           stub.base_url, ledger, tmp_path, hides_aborted=kafka.hides_aborted)

    assert violations(report) == [], {k: report[k] for k in ("lost_examples", "excused_transactions", "incarnations",
                                                              "duplicate_examples", "repeated_llm_examples")}
    if kafka.hides_aborted:
        # Apache Kafka: nothing is excused, and a second client (not librdkafka) reads each output once.
        assert report["excused_transactions"] == {}
        copies = output_copies(read_topic_to_end(kafka.bootstrap_servers, output_topic))
        assert len(copies) == config.records and set(copies.values()) == {1}, \
            {k: n for k, n in copies.items() if n != 1}
    assert report["distinct_outputs"] == config.records
    assert report["graceful_exit_codes"] == [0]
    # Tansu only: copies not counted as committed come only from the killed worker's open transaction.
    assert all("SIGKILL" in why for why in report["excused_transactions"].values()), report["excused_transactions"]
    assert len(report["excused_transactions"]) <= 1
    if kafka.hides_aborted:
        assert report["delivered_only_by_a_killed_transaction"] == 0
    kill, term, join = report["events"]
    assert kill["partitions"] and kill["recovery_s"] is not None, report["events"]
    assert term["partitions"] and term["recovery_s"] is not None, report["events"]
    # The joiner took partitions over and output from them (the classic protocol's scale-out).
    assert join["partitions"] and join["first_output_s"] is not None, join
