"""Peer: Quix Streams doing the sentiment job the way an application developer writes it there.

Exactly-once processing, a per-key stateful step (a count of records per key, kept in
Quix's RocksDB state with its changelog topic) that calls the LLM synchronously through
the ``openai`` client, the JSON result sent to the output topic.

    bench/.peers-venv/bin/python bench/peers/quix_peer.py --bootstrap 127.0.0.1:9092 \\
        --input-topic in --output-topic out --count 200 --llm-base-url http://127.0.0.1:8000/v1 --model stub
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from typing import Any

import peer_common
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource
from quixstreams import Application, State

logger = logging.getLogger("quix_peer")

PEER = "quix"


def _extra_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--processing-guarantee", choices=("exactly-once", "at-least-once"), default="exactly-once")
    parser.add_argument("--commit-interval-s", type=float, default=5.0, help="Quix's commit_interval (its default 5 s)")


def ensure_retention_setting(bootstrap: str, topic: str) -> None:
    """Give ``topic`` an explicit retention.ms when the broker reports none.

    Quix derives its changelog topic's config from the input topic's retention.ms and
    fails with KeyError('retention.ms') without it. Real Kafka always reports the value;
    the embedded broker (Tansu) reports only settings set explicitly. -1 (keep forever)
    is what Tansu does anyway, so setting it changes nothing else.
    """
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    described = admin.describe_configs([resource], request_timeout=15)[resource].result()
    if "retention.ms" in described:
        return
    logger.warning("input topic %s reports no retention.ms (embedded broker); setting it to -1 for Quix", topic)
    update = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "-1", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([update], request_timeout=15)[update].result()


def build_app(args: argparse.Namespace, book: peer_common.LatencyBook, state_dir: str) -> Application:
    """The Quix application: input topic -> stateful LLM step -> output topic."""
    chat = peer_common.chat_function(args.llm_base_url, args.model)
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        processing_guarantee=args.processing_guarantee,
        commit_interval=args.commit_interval_s,
        state_dir=state_dir,
        consumer_extra_config=dict(peer_common.TANSU_CONSUMER_SETTINGS),
        loglevel=args.log_level.upper(),
    )
    input_topic = app.topic(args.input_topic, key_deserializer="str", value_deserializer="json")
    output_topic = app.topic(args.output_topic, key_serializer="str", value_serializer="json")

    def analyze(value: dict[str, Any], key: str | None, timestamp: int, headers: Any, state: State) -> dict[str, Any]:
        record_id = str(value["id"])
        book.taken(key if key is not None else record_id, timestamp)
        state.set("count", state.get("count", 0) + 1)
        return peer_common.sentiment_result(record_id, chat(value["text"]))

    sdf = app.dataframe(input_topic)
    sdf = sdf.apply(analyze, stateful=True, metadata=True)
    sdf.to_topic(output_topic)
    return app


def main(argv: list[str] | None = None) -> int:
    args = peer_common.parse_args(PEER, argv, _extra_args)
    book = peer_common.LatencyBook()
    cpu_meter = peer_common.ProcessTreeCpu()
    ensure_retention_setting(args.bootstrap, args.input_topic)
    with tempfile.TemporaryDirectory(prefix="quix-peer-state-") as state_dir:
        app = build_app(args, book, state_dir)
        watcher = peer_common.OutputWatcher(args.bootstrap, args.output_topic, args.count, book)
        watcher.start()
        deadline = time.monotonic() + args.timeout_s
        # The overall time-out: Quix's own run(timeout=) is an idle time-out, not a deadline.
        guard = threading.Timer(args.timeout_s, app.stop)
        guard.daemon = True
        guard.start()
        try:
            app.run(count=args.count, collect=False)
            # The last transaction commits when run() returns; wait until a reader sees it.
            watcher.done.wait(max(0.0, deadline - time.monotonic()))
            cpu = cpu_meter.total()
        finally:
            guard.cancel()
            watcher.stop()
        watcher.join(10)
    if watcher.error is not None:
        raise watcher.error
    peer_common.report(PEER, book, args.count, cpu_seconds=cpu,
                       extra={"processing_guarantee": args.processing_guarantee,
                              "commit_interval_s": args.commit_interval_s})
    return 0 if book.outputs >= args.count else 1


if __name__ == "__main__":
    sys.exit(main())
