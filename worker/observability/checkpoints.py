"""What each settled checkpoint tells the operator: commit metrics, and a log line for dead letters.

Dead-lettering is never silent: each record sent to the DLQ is counted by reason, and a WARNING
names the DLQ topic, the counts and one example, at most once per DLQ_LOG_INTERVAL_S so a flood of
bad input cannot flood the log.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

from worker.checkpoint.checkpoint import Checkpoint
from worker.checkpoint.producer import AbortableCommitError
from worker.observability.metrics import WorkerMetrics
from worker.records import failure_reason

__all__ = ["CheckpointObserver"]

logger = logging.getLogger(__name__)

DLQ_LOG_INTERVAL_S = 10.0


class CheckpointObserver:
    def __init__(self, metrics: WorkerMetrics, output_topic: str, dead_letter_topic: str) -> None:
        self.metrics = metrics
        self.output_topic = output_topic
        self.dead_letter_topic = dead_letter_topic
        self._unreported: Counter[str] = Counter()
        self._example = ""
        self._last_report = 0.0

    def committed(self, checkpoint: Checkpoint) -> None:
        m = self.metrics
        now_ms = time.time() * 1000
        m.transactions_committed_total.inc()
        m.commit_duration_seconds.observe(checkpoint.duration_s)
        m.last_commit_timestamp_seconds.set(now_ms / 1000)
        if checkpoint.outputs:
            m.records_out_total.labels(self.output_topic).inc(checkpoint.outputs)
        dead = Counter(letter.reason for letter in checkpoint.dead_letters)
        e2e = m.end_to_end_latency_seconds
        for delta in checkpoint.deltas:
            for _meta, _value, error in delta.failures:
                dead[failure_reason(error)] += 1
            if delta.skipped:
                m.records_skipped_total.labels("already-finished").inc(len(delta.skipped))
            for meta in delta.finished:
                if meta is not None and meta.timestamp_ms > 0:
                    e2e.observe(max(0.0, (now_ms - meta.timestamp_ms) / 1000))
        for reason, count in dead.items():
            m.dlq_records_total.labels(reason).inc(count)
        if dead:
            self._note_dead_letters(checkpoint, dead)

    def aborted(self, _checkpoint: Checkpoint, _error: AbortableCommitError) -> None:
        self.metrics.transactions_aborted_total.inc()

    def _note_dead_letters(self, checkpoint: Checkpoint, dead: Counter[str]) -> None:
        self._unreported.update(dead)
        if not self._example:
            if checkpoint.dead_letters:
                letter = checkpoint.dead_letters[0]
                key = (letter.key or b"").decode("utf-8", "replace")
                self._example = (f"{letter.meta.topic}[{letter.meta.partition}]@{letter.meta.offset} key {key!r}: "
                                 f"{letter.reason}: {str(letter.error)[:200]}")
            else:
                meta, _value, error = next(f for d in checkpoint.deltas for f in d.failures)
                key = meta.key.decode("utf-8", "replace")
                self._example = (f"{meta.topic}[{meta.partition}]@{meta.offset} key {key!r}: "
                                 f"{failure_reason(error)}: {str(error)[:200]}")
        self.report_dead_letters()

    def report_dead_letters(self, force: bool = False) -> None:
        """Log the dead letters not reported yet, if the interval has passed (the loop calls this now and then)."""
        now = time.monotonic()
        if self._unreported and (force or now - self._last_report >= DLQ_LOG_INTERVAL_S):
            self._last_report = now
            counts = ", ".join(f"{reason}={n}" for reason, n in sorted(self._unreported.items()))
            logger.warning("dead-lettered %d records to %s (%s); e.g. %s", sum(self._unreported.values()),
                           self.dead_letter_topic, counts, self._example)
            self._unreported.clear()
            self._example = ""
