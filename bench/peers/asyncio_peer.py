"""Peer: a hand-written asyncio service — confluent-kafka, ``AsyncOpenAI`` on aiohttp, bounded concurrency.

What a competent engineer writes in an afternoon for "consume, call the model, produce":

* one task per record, at most ``--max-inflight`` at once (a semaphore; the consume loop waits
  on it, so a slow model holds back consumption instead of piling up tasks);
* the model through ``openai.AsyncOpenAI`` with its aiohttp transport (``DefaultAioHttpClient``);
* an idempotent producer (``acks=all``); a record is finished when its output's delivery is
  confirmed;
* at-least-once: offsets are committed every ``--commit-interval-s``, per partition only up to
  the lowest record not yet finished (:mod:`offset_tracker`), so a crash replays at most the
  records in flight and never skips one; on revocation the finished prefix is committed first;
* the consumer's calls run on one thread of their own (librdkafka blocks), the producer's delivery
  reports are served by another; the event loop only schedules. A record whose model call fails
  (after the client's retry) ends the peer: nothing past it is committed, a restart replays it.

    bench/.peers-venv/kafka/bin/python bench/peers/asyncio_peer.py --bootstrap 127.0.0.1:9092 \\
        --input-topic in --output-topic out --count 200 --llm-base-url http://127.0.0.1:8000/v1 --model stub
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import peer_common
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from offset_tracker import OffsetTracker

logger = logging.getLogger("asyncio_peer")

PEER = "asyncio"
_BATCH = 500  # records taken per consume() call


def _extra_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-inflight", type=int, default=256, help="records processed at once (default 256)")
    parser.add_argument("--commit-interval-s", type=float, default=1.0, help="offset commit period (default 1 s)")


def async_chat_function(base_url: str, model: str, max_connections: int) -> Callable[[str], Awaitable[str]]:
    """text -> the model's answer through AsyncOpenAI on aiohttp (or the in-process instant model)."""
    if base_url == peer_common.INSTANT_MODEL:
        answer = peer_common.chat_function(base_url, model)("")

        async def instant(text: str) -> str:
            return answer

        return instant
    import httpx2  # openai's HTTP layer
    from openai import AsyncOpenAI, DefaultAioHttpClient

    # One connection per record in flight, kept alive: no reconnects under load.
    limits = httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    client = AsyncOpenAI(base_url=base_url, api_key=peer_common.DUMMY_API_KEY, timeout=peer_common.LLM_TIMEOUT_S,
                         max_retries=peer_common.LLM_MAX_RETRIES, http_client=DefaultAioHttpClient(limits=limits))

    async def chat(text: str) -> str:
        completion = await client.chat.completions.create(model=model, messages=peer_common.sentiment_messages(text))
        return completion.choices[0].message.content or ""

    return chat


class AsyncPeer:
    def __init__(self, args: argparse.Namespace, book: peer_common.LatencyBook) -> None:
        self._args = args
        self._book = book
        self._tracker = OffsetTracker()
        self._chat = async_chat_function(args.llm_base_url, args.model, args.max_inflight)
        self._consumer = Consumer({
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **peer_common.TANSU_CONSUMER_SETTINGS,
        })
        self._producer = Producer({"bootstrap.servers": args.bootstrap, "acks": "all", "enable.idempotence": True,
                                   "linger.ms": 5})
        self._kafka_thread = ThreadPoolExecutor(1, thread_name_prefix="consumer")
        self._stop_delivery = threading.Event()
        self._failure: BaseException | None = None

    # -- the consumer's thread -------------------------------------------------------------------------------

    def _commit(self, asynchronous: bool) -> None:
        offsets = self._tracker.to_commit()
        if not offsets:
            return
        self._consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                              asynchronous=asynchronous)
        self._tracker.committed(offsets)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            self._commit(asynchronous=False)
        except KafkaException as exc:  # the group moved on: the records are replayed by the new owner
            logger.warning("commit on revoke: %s", exc)
        self._tracker.forget([(tp.topic, tp.partition) for tp in partitions])

    def _serve_deliveries(self) -> None:
        while not self._stop_delivery.is_set():
            self._producer.poll(0.1)

    # -- the event loop --------------------------------------------------------------------------------------

    async def _process(self, msg: Message, slots: asyncio.Semaphore, loop: asyncio.AbstractEventLoop) -> None:
        try:
            record: dict[str, Any] = json.loads(msg.value())
            record_id = str(record["id"])
            result = peer_common.sentiment_result(record_id, await self._chat(record["text"]))
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()

            def delivered(err: KafkaError | None, _: Message) -> None:  # on the delivery thread
                if err is not None:
                    loop.call_soon_threadsafe(self._fail, KafkaException(err))
                else:
                    self._tracker.finished(topic, partition, offset)
                loop.call_soon_threadsafe(slots.release)

            self._producer.produce(self._args.output_topic, key=msg.key() or record_id.encode(),
                                   value=json.dumps(result, ensure_ascii=False), on_delivery=delivered)
        except BaseException as exc:
            slots.release()
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc

    async def _committer(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            await asyncio.sleep(self._args.commit_interval_s)
            await loop.run_in_executor(self._kafka_thread, self._commit, True)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(self._args.max_inflight)
        tasks: set[asyncio.Task[None]] = set()
        self._consumer.subscribe([self._args.input_topic], on_revoke=self._on_revoke)
        delivery = threading.Thread(target=self._serve_deliveries, name="deliveries", daemon=True)
        delivery.start()
        committer = asyncio.create_task(self._committer(loop))
        deadline = time.monotonic() + self._args.timeout_s
        taken = 0
        try:
            while taken < self._args.count and self._failure is None and time.monotonic() < deadline:
                batch = await loop.run_in_executor(self._kafka_thread, self._consumer.consume,
                                                   min(_BATCH, self._args.count - taken), 0.1)
                for msg in batch:
                    if msg.error() is not None:
                        logger.warning("consume: %s", msg.error())
                        continue
                    await slots.acquire()  # the bound: wait for a free slot before taking on more
                    self._tracker.taken(msg.topic(), msg.partition(), msg.offset())
                    _, created_ms = msg.timestamp()
                    key = msg.key()
                    self._book.taken(key.decode() if key is not None else "", created_ms)
                    task = asyncio.create_task(self._process(msg, slots, loop))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    taken += 1
            if tasks:
                await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
            # Every produced output delivered: the slots all come back.
            for _ in range(self._args.max_inflight if self._failure is None else 0):
                await asyncio.wait_for(slots.acquire(), timeout=max(0.1, deadline - time.monotonic()))
        finally:
            committer.cancel()
            self._stop_delivery.set()
            delivery.join(10)
            self._producer.flush(30)
            await loop.run_in_executor(self._kafka_thread, self._commit, False)
            await loop.run_in_executor(self._kafka_thread, self._consumer.close)
            self._kafka_thread.shutdown()
        if self._failure is not None:
            raise self._failure


def main(argv: list[str] | None = None) -> int:
    args = peer_common.parse_args(PEER, argv, _extra_args)
    if args.max_inflight <= 0:
        raise SystemExit("--max-inflight must be positive")
    book = peer_common.LatencyBook()
    cpu_meter = peer_common.ProcessTreeCpu()
    watcher = peer_common.OutputWatcher(args.bootstrap, args.output_topic, args.count, book)
    watcher.start()
    started = time.monotonic()
    try:
        asyncio.run(AsyncPeer(args, book).run())
        watcher.done.wait(max(0.0, args.timeout_s - (time.monotonic() - started)))
        cpu = cpu_meter.total()
    finally:
        watcher.stop()
    watcher.join(10)
    if watcher.error is not None:
        raise watcher.error
    peer_common.report(PEER, book, args.count, cpu_seconds=cpu,
                       extra={"max_inflight": args.max_inflight, "commit_interval_s": args.commit_interval_s})
    return 0 if book.outputs >= args.count else 1


if __name__ == "__main__":
    sys.exit(main())
