"""Warm a freshly started broker before a scenario measures anything on it.

A fresh Apache Kafka JVM spends its first ~30 s compiling its hot paths: measured on this 2-core
machine under a transactional load of ~800 records/s, the broker used 0.7 cores in the first 3 s,
0.4-0.5 until 15 s and ~0.2 from 25 s on. A scenario started on a cold broker shares the cores with
that compilation, and the peers, which run after ours on the same broker, would find it warmer.
So every bench cluster first runs the request types a worker's pipeline uses (produce, read_committed
fetch, a consumer group, and transactions carrying offsets) for ``seconds``, on topics of its own.
Bench brokers now compile with C1 only (bench/broker.py), which shortens this, but the warm-up still
counts: in S3 at 200 ms / 1,024 the broker used 0.37 ms per record after 5 s of it, 0.26 after 20 s.
"""

from __future__ import annotations

import threading
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition

from worker.kafka.admin import TopicAdmin

BATCH = 80  # records per transaction, one transaction every TICK_S: ~800 records/s
TICK_S = 0.1
PARTITIONS = 4


def warm_broker(bootstrap: str, seconds: float) -> int:
    """Run a consume-transform-produce loop against ``bootstrap`` for ``seconds``; returns records copied."""
    if seconds <= 0:
        return 0
    tag = uuid.uuid4().hex[:6]
    source, sink = f"warmup-in-{tag}", f"warmup-out-{tag}"
    admin = TopicAdmin(bootstrap)
    for topic in (source, sink):
        admin.create_topic(topic, PARTITIONS)
    stop = threading.Event()
    feeder = threading.Thread(target=_feed, args=(bootstrap, source, stop), name="warmup-feed", daemon=True)
    feeder.start()
    try:
        return _copy(bootstrap, source, sink, f"warmup-{tag}", time.monotonic() + seconds)
    finally:
        stop.set()
        feeder.join(30)


def _feed(bootstrap: str, topic: str, stop: threading.Event) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    sent = 0
    while not stop.is_set():
        for _ in range(BATCH):
            producer.produce(topic, key=str(sent % 1000), value=b'{"text": "warm-up record"}')
            sent += 1
        producer.poll(0)
        stop.wait(TICK_S)
    producer.flush(30)


def _copy(bootstrap: str, source: str, sink: str, group: str, deadline: float) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "isolation.level": "read_committed",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": group, "linger.ms": 5})
    copied = 0
    try:
        consumer.subscribe([source])
        producer.init_transactions(30)
        while time.monotonic() < deadline:
            messages = [m for m in consumer.consume(BATCH, TICK_S) if m.error() is None]
            if not messages:
                continue
            producer.begin_transaction()
            for message in messages:
                producer.produce(sink, key=message.key(), value=message.value())
            next_offsets = {m.partition() or 0: (m.offset() or 0) + 1 for m in messages}  # the last one wins
            offsets = [TopicPartition(source, partition, offset) for partition, offset in next_offsets.items()]
            producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 30)
            producer.commit_transaction(30)
            copied += len(messages)
    finally:
        consumer.close()
    return copied
