"""State restore rate: restore_partition into an empty store, side by side with a baseline.

    .venv/bin/python bench/restore_rate.py [--broker kafka|tansu] [--records 100000] [--rounds 3]
        [--baseline /tmp/restore_old.py]   # e.g. from `git show <rev>:worker/state/restore.py`

Fills one changelog partition on the broker (Apache Kafka unless ``--broker tansu``; batched, like an
at-least-once changelog, values shaped like the worker's state records), then alternates the
implementations round by round on the same topic so both see the same machine load. The changelog
ends with a single-record batch: Tansu's ListOffsets end is then right, so a baseline that trusts it
reads everything too. Prints JSON: the broker, records/s per implementation and round, and the
median ratio.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from confluent_kafka import Producer  # noqa: E402

from bench.broker import add_broker_argument, require_broker, start_broker  # noqa: E402
from worker.kafka.admin import TopicAdmin  # noqa: E402
from worker.state.restore import restore_partition  # noqa: E402

Restore = Callable[..., Any]


def fill(bootstrap: str, topic: str, records: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10_000,
                         "queue.buffering.max.messages": 2_000_000})
    for i in range(records - 1):
        producer.produce(topic, b'{"m":{"id":"r%d"},"p":%d}' % (i, i), b"r%d" % i, partition=0)
        if i % 50_000 == 0:
            producer.poll(0)
    if producer.flush(300) != 0:
        raise RuntimeError("could not fill the changelog")
    producer.produce(topic, b"{}", b"last", partition=0)  # a single-record last batch (see above)
    if producer.flush(30) != 0:
        raise RuntimeError("could not fill the changelog")


def load_baseline(path: Path) -> Restore:
    spec = importlib.util.spec_from_file_location("restore_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.restore_partition  # type: ignore[no-any-return]


def run_once(restore: Restore, bootstrap: str, topic: str, workdir: Path, label: str, round_: int) -> float:
    # The worker's restore settings (runtime._restore): 10 ms fetch wait, Nagle off.
    config = {"bootstrap.servers": bootstrap, "group.id": f"bench-restore-{label}-{round_}",
              "fetch.wait.max.ms": 10, "socket.nagle.disable": True}
    started = time.perf_counter()
    result = restore(workdir / f"{label}-{round_}", topic, 0, config, 600.0)
    seconds = time.perf_counter() - started
    result.store.close()
    return result.records / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_broker_argument(parser)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="a restore.py to compare against")
    args = parser.parse_args()
    require_broker(args.broker)
    implementations: dict[str, Restore] = {"current": restore_partition}
    if args.baseline:
        implementations = {"baseline": load_baseline(args.baseline), **implementations}
    rates: dict[str, list[float]] = {label: [] for label in implementations}
    with start_broker(args.broker) as broker, tempfile.TemporaryDirectory(prefix="bench-restore-") as tmp:
        TopicAdmin(broker.bootstrap_servers).create_topic("changelog", 1)
        fill(broker.bootstrap_servers, "changelog", args.records)
        for round_ in range(args.rounds):
            for label, restore in implementations.items():
                rates[label].append(run_once(restore, broker.bootstrap_servers, "changelog", Path(tmp), label, round_))
    figures: dict[str, Any] = {"broker": broker.info()["description"], "records": args.records,
                               "records_per_s": {k: [round(r) for r in v] for k, v in rates.items()}}
    if "baseline" in rates:
        figures["median_ratio_current_to_baseline"] = round(
            statistics.median(c / b for c, b in zip(rates["current"], rates["baseline"])), 2)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
