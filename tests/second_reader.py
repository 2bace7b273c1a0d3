"""A second, independent Kafka client (kafka-python, pure Python) that reads what a test wrote.

The exactly-once tests read outputs with confluent-kafka (librdkafka), the same client library the
workers use. A bug shared by writer and reader, say in librdkafka's read_committed filtering,
could hide a duplicate from such a test. kafka-python implements the protocol on its own
(fetch, aborted-transaction index, last stable offset), so the same records read through it are a
check that does not trust librdkafka.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition

__all__ = ["ReadRecord", "read_topic_to_end", "output_copies"]


@dataclass(frozen=True)
class ReadRecord:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def read_topic_to_end(bootstrap: str, topic: str, isolation: str = "read_committed",
                      timeout_s: float = 60.0) -> list[ReadRecord]:
    """Every record of ``topic`` from the beginning up to its end when called, in partition order.

    "End" is the last stable offset under read_committed (kafka-python asks ListOffsets with the
    consumer's isolation level), so open transactions are not waited for. Raises TimeoutError if the
    end is not reached within ``timeout_s``.
    """
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation, enable_auto_commit=False,
                             group_id=None, fetch_max_wait_ms=50, request_timeout_ms=30000)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise ValueError(f"topic {topic} has no partitions (or does not exist)")
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        ends = consumer.end_offsets(assigned)
        records: list[ReadRecord] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in assigned):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                behind = {tp.partition: (consumer.position(tp), ends[tp]) for tp in assigned}
                raise TimeoutError(f"kafka-python did not reach the end of {topic} in {timeout_s:g}s: {behind}")
            for tp, batch in consumer.poll(timeout_ms=int(min(remaining, 0.5) * 1000)).items():
                records.extend(ReadRecord(tp.partition, m.offset, m.key, m.value) for m in batch)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def output_copies(records: Iterable[ReadRecord],
                  fields: tuple[str, ...] = ("key", "seq")) -> Counter[tuple[object, ...]]:
    """How many times each input's output was read: outputs are JSON objects naming their input by ``fields``."""
    return Counter(tuple(json.loads(r.value or b"null")[f] for f in fields) for r in records)
