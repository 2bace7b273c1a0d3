"""A partition held for several reasons resumes only when the last one goes."""

from __future__ import annotations

from confluent_kafka import TopicPartition

from worker.processing.pausing import PauseReason, PausingManager


class RecordingConsumer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[tuple[str, int]]]] = []

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.calls.append(("pause", [(tp.topic, tp.partition) for tp in partitions]))

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.calls.append(("resume", [(tp.topic, tp.partition) for tp in partitions]))


class Gauge:
    value = -1

    def set(self, value: int) -> None:
        self.value = value


def test_no_reason_resumes_a_partition_another_reason_still_holds() -> None:
    consumer, gauge = RecordingConsumer(), Gauge()
    pausing = PausingManager(consumer, gauge)
    pausing.assign([("in", 0)], PauseReason.RESTORING)
    pausing.assign([("in", 1)])
    pausing.pause([("in", 0), ("in", 1)], PauseReason.HOT_KEY)
    assert consumer.calls == [("pause", [("in", 0)]), ("pause", [("in", 1)])] and gauge.value == 2
    pausing.resume([("in", 0)], PauseReason.RESTORING)  # still hot: stays paused
    pausing.resume([("in", 1)], PauseReason.HOT_KEY)
    assert consumer.calls[-1] == ("resume", [("in", 1)]) and gauge.value == 1
    pausing.resume([("in", 0)], PauseReason.HOT_KEY)
    assert consumer.calls[-1] == ("resume", [("in", 0)]) and gauge.value == 0


def test_a_reason_held_everywhere_applies_to_partitions_assigned_later() -> None:
    consumer = RecordingConsumer()
    pausing = PausingManager(consumer)
    pausing.assign([("in", 0)])
    pausing.pause_all(PauseReason.WINDOW_FULL)
    pausing.assign([("in", 1)], PauseReason.RESTORING)
    assert pausing.reasons(("in", 1)) == {PauseReason.WINDOW_FULL, PauseReason.RESTORING}
    pausing.resume([("in", 1)], PauseReason.RESTORING)
    pausing.resume_all(PauseReason.WINDOW_FULL)
    assert consumer.calls[-1] == ("resume", [("in", 0), ("in", 1)])
    pausing.forget([("in", 0)])
    pausing.pause_all(PauseReason.SHUTDOWN)
    assert consumer.calls[-1] == ("pause", [("in", 1)])  # a forgotten partition is not ours to pause
