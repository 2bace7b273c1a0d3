"""Peer: the hand-rolled loop — confluent-kafka consume -> openai chat completion -> produce.

At-least-once, synchronous, one record at a time, as such services are commonly written:
auto-commit on, but an input's offset is stored for commit only once its output was
delivered (``enable.auto.offset.store=false`` + ``store_offsets`` in the delivery report).

    bench/.peers-venv/bin/python bench/peers/naive_peer.py --bootstrap 127.0.0.1:9092 \\
        --input-topic in --output-topic out --count 200 --llm-base-url http://127.0.0.1:8000/v1 --model stub
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import peer_common
from confluent_kafka import Consumer, KafkaError, Message, Producer

logger = logging.getLogger("naive_peer")

PEER = "naive"


def main(argv: list[str] | None = None) -> int:
    args = peer_common.parse_args(PEER, argv)
    book = peer_common.LatencyBook()
    cpu_meter = peer_common.ProcessTreeCpu()
    chat = peer_common.chat_function(args.llm_base_url, args.model)
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        "enable.auto.offset.store": False,
        **peer_common.TANSU_CONSUMER_SETTINGS,
    })
    producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 0, "acks": "all"})
    watcher = peer_common.OutputWatcher(args.bootstrap, args.output_topic, args.count, book)
    watcher.start()

    def delivered(err: KafkaError | None, msg: Message, source: Message) -> None:
        if err is not None:
            raise RuntimeError(f"output for offset {source.offset()} not delivered: {err}")
        consumer.store_offsets(message=source)

    consumer.subscribe([args.input_topic])
    deadline = time.monotonic() + args.timeout_s
    processed = 0
    try:
        while processed < args.count and time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            producer.poll(0)
            if msg is None:
                continue
            if msg.error() is not None:
                logger.warning("consume: %s", msg.error())
                continue
            record: dict[str, Any] = json.loads(msg.value())
            record_id = str(record["id"])
            key = msg.key() if msg.key() is not None else record_id.encode()
            _, created_ms = msg.timestamp()
            book.taken(key.decode(), created_ms)
            result = peer_common.sentiment_result(record_id, chat(record["text"]))
            producer.produce(args.output_topic, key=key, value=json.dumps(result, ensure_ascii=False),
                             on_delivery=lambda err, out, source=msg: delivered(err, out, source))
            processed += 1
        producer.flush(30)
        watcher.done.wait(max(0.0, deadline - time.monotonic()))
        cpu = cpu_meter.total()
    finally:
        watcher.stop()
        consumer.close()  # commits the stored offsets
    watcher.join(10)
    if watcher.error is not None:
        raise watcher.error
    peer_common.report(PEER, book, args.count, cpu_seconds=cpu)
    return 0 if book.outputs >= args.count else 1


if __name__ == "__main__":
    sys.exit(main())
