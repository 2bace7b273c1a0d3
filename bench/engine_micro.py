"""S1 without Kafka: the worker's per-record path on one process, for fast A/B runs of the engine.

``python -m bench.engine_micro [--records N] [--keys K] [--profile OUT.svg]`` drives the sentiment agent
with the in-process instant model the way the worker does (decode, submit, take a checkpoint every round
of up to ``MAX_BATCH`` records: collect, encode outputs and headers, changelog records, store writes after
the "commit", release), with the worker's metrics and interpreter settings, and prints process CPU ms per
record. Only librdkafka is left out (a producer that accepts records and reports their delivery), so the
figure is the engine's and the checkpoint's share of S1's CPU per record.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, cast

from agentplan import AgentConfiguration, Engine
from bench.cluster import INSTANT_LLM, SENTIMENT_AGENT, SENTIMENT_INPUT, review
from worker.checkpoint.checkpoint import Checkpoint, Phase, Topics
from worker.interpreter import tune_interpreter
from worker.observability.metrics import WorkerMetrics
from worker.offsets import OffsetTracker
from worker.plugins import compile_plan, load_agent, load_model
from worker.processing.window import MAX_BATCH
from worker.records import EngineKey, InputDecoder, RecordMeta, describe_key, user_key
from worker.state.store import PartitionStore

PARTITIONS = 4
TOPIC = "in"


class _Delivered:
    __slots__ = ("_partition", "_offset")

    def __init__(self, partition: int, offset: int) -> None:
        self._partition, self._offset = partition, offset

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


class NullProducer:
    """Takes records like the checkpoint's producer and reports their delivery at flush."""

    transactional = True

    def __init__(self) -> None:
        self.records = 0
        self._reports: list[tuple[Callable[[Any, Any], None], int]] = []

    def begin(self) -> None:
        pass

    def produce(self, topic: str, value: bytes | None, key: bytes | None = None, partition: int | None = None,
                headers: Any = None, on_delivery: Callable[[Any, Any], None] | None = None) -> None:
        self.records += 1
        if on_delivery is not None:
            self._reports.append((on_delivery, -1 if partition is None else partition))

    def flush(self) -> None:
        for report, partition in self._reports:
            report(None, _Delivered(partition, self.records))
        self._reports = []

    def send_offsets(self, offsets: dict[tuple[str, int], int]) -> None:
        pass

    def commit(self) -> None:
        pass


async def drive(records: int, keys: int, state_dir: Path, window: int = 1024) -> dict[str, float]:
    plan = compile_plan(load_agent(SENTIMENT_AGENT), AgentConfiguration(), {"local_llm": INSTANT_LLM})
    stores = {p: PartitionStore(state_dir / str(p)) for p in range(PARTITIONS)}
    metrics = WorkerMetrics(app_id="micro")

    def load(engine_key: Hashable) -> bytes | None:
        partition, key = cast(EngineKey, engine_key)
        return stores[partition].get(key)

    tracker = OffsetTracker()

    def ran(meta: RecordMeta) -> None:  # as the worker frees a record's in-flight slot when its run ends
        tracker.ran((meta.topic, meta.partition), meta.offset)

    engine = Engine(plan, state_loader=load, metrics=metrics, describe_key=describe_key, user_key=user_key,
                    commits_state=True, on_input_finished=ran)
    decoder = InputDecoder(load_model(SENTIMENT_INPUT), 1 << 20)
    producer = NullProducer()
    topics = Topics("micro", "out", "dlq", "changelog", "repartition")
    inputs = [review(i, keys) for i in range(records)]
    next_offset = [0] * PARTITIONS
    tune_interpreter()
    outputs = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    taken = 0
    seq = 0
    while True:
        room = min(MAX_BATCH, window - tracker.unfinished, records - taken)
        for key, value in inputs[taken:taken + room]:
            partition = hash(key) % PARTITIONS
            offset = next_offset[partition]
            next_offset[partition] += 1
            tracker.add((TOPIC, partition), offset)
            meta = RecordMeta(TOPIC, partition, offset, 0, key)
            decoded_key, decoded = decoder.decode(key, value)
            engine.submit((partition, decoded_key), decoded, position=offset, meta=meta)
        taken += room
        await asyncio.sleep(0)
        deltas = engine.collect()
        for delta in deltas:
            for meta in delta.finished:
                tracker.collected((meta.topic, meta.partition), meta.offset)
        seq += 1
        checkpoint = Checkpoint(f"micro#{seq}", deltas, [], [], tracker.changed(), topics)
        checkpoint.produce(producer)  # type: ignore[arg-type]
        if checkpoint.close(producer) is not None:  # type: ignore[arg-type]
            raise RuntimeError("the null producer failed")
        checkpoint.move(Phase.COMMITTED)
        tracker.commit(checkpoint.offsets)
        checkpoint.state.flush(stores)
        engine.release(checkpoint.deltas)
        outputs += checkpoint.outputs
        if taken == records and tracker.uncollected == 0:
            break
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    for store in stores.values():
        store.close()
    if outputs != records:
        raise RuntimeError(f"{outputs} outputs for {records} records")
    return {"records": records, "cpu_ms_per_record": round(1000 * cpu / records, 4),
            "records_per_s": round(records / wall), "load_average": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.engine_micro", description=__doc__)
    parser.add_argument("--records", type=int, default=30_000)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="engine-micro-") as state_dir:
            print(json.dumps(asyncio.run(drive(args.records, args.keys, Path(state_dir)))), flush=True)


if __name__ == "__main__":
    main()
