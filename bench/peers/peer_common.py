"""What the peer scripts share: CLI, the sentiment prompt, measurement, the result line.

The peer scripts run in the separate peers venv (``bench/.peers-venv``) as
``python bench/peers/<peer>.py``, so this module is imported as a top-level module from
the script's directory and must not import anything from this repository.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__:  # imported as bench.peers.peer_common (the harness)
    from .flink_port import example_prompt_messages
else:  # imported by a peer script, which runs with bench/peers on sys.path
    from flink_port import example_prompt_messages

logger = logging.getLogger(__name__)

# The sentiment prompt's messages, read from the example our worker runs, so every peer sends the
# very request our agent sends (the peers' venvs do not have agentplan to import it from).
SENTIMENT_SYSTEM_PROMPT, SENTIMENT_USER_TEMPLATE = example_prompt_messages()
# The seed's OpenAI connection settings (timeout, retries); the key is a dummy for the stub.
LLM_TIMEOUT_S = 300.0
LLM_MAX_RETRIES = 1
DUMMY_API_KEY = "sk-benchmark-stub"

# Consumer settings the embedded broker needs to be quick (see design/BROKER.md); every
# peer gets the same ones as our worker, so the comparison measures the frameworks.
TANSU_CONSUMER_SETTINGS: dict[str, Any] = {
    "fetch.wait.max.ms": 10,
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 1000,
}


def parse_args(peer: str, argv: list[str] | None = None, extra: Callable[[argparse.ArgumentParser], None] | None = None
               ) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"{peer}_peer", description=f"benchmark peer: {peer}")
    parser.add_argument("--bootstrap", required=True, help="HOST:PORT of the Kafka broker")
    parser.add_argument("--input-topic", required=True)
    parser.add_argument("--output-topic", required=True)
    parser.add_argument("--count", type=int, required=True, help="stop after this many outputs")
    parser.add_argument("--llm-base-url", required=True,
                        help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1, "
                                                    f"or {INSTANT_MODEL!r} for an in-process model answering at once")
    parser.add_argument("--model", required=True)
    parser.add_argument("--group", default=None, help="consumer group (default: a fresh one)")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="give up after this long")
    parser.add_argument("--log-level", default="WARNING")
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    if args.count <= 0:
        parser.error("--count must be positive")
    if args.group is None:
        args.group = f"peer-{peer}-{uuid.uuid4().hex[:8]}"
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return args


#: ``--llm-base-url`` value for an in-process model that answers at once (scenario S1): the peer's own
#: cost without any HTTP client, as our worker's S1 measures it with its in-process instant model.
INSTANT_MODEL = "instant"
_INSTANT_ANSWER = json.dumps({"sentiment": "positive", "confidence": 0.9, "key_phrases": ["instant"]})


def chat_function(base_url: str, model: str) -> Callable[[str], str]:
    """text -> the model's answer: a synchronous ``openai`` call, as applications write it, or instant."""
    if base_url == INSTANT_MODEL:
        return lambda text: _INSTANT_ANSWER
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key=DUMMY_API_KEY, timeout=LLM_TIMEOUT_S, max_retries=LLM_MAX_RETRIES)

    def chat(text: str) -> str:
        completion = client.chat.completions.create(model=model, messages=sentiment_messages(text))
        return completion.choices[0].message.content or ""

    return chat


def sentiment_messages(text: str) -> list[dict[str, str]]:
    """The chat request the seed's agent sends for one input text."""
    return [
        {"role": "system", "content": SENTIMENT_SYSTEM_PROMPT},
        {"role": "user", "content": SENTIMENT_USER_TEMPLATE.format(input=text)},
    ]


def sentiment_result(record_id: str, content: str) -> dict[str, Any]:
    """Parse the model's JSON answer into the seed's SentimentAnalysisResult fields."""
    answer = json.loads(content)
    return {
        "id": record_id,
        "sentiment": str(answer["sentiment"]),
        "confidence": float(answer["confidence"]),
        "key_phrases": [str(p) for p in answer["key_phrases"]],
    }


class ProcessTreeCpu(threading.Thread):
    """CPU seconds used by this process and every process it spawned, directly or not.

    Flink's JVM starts Python workers through shell wrappers that exit, are killed or
    reparent their children, so neither RUSAGE_CHILDREN nor one walk of /proc at the end
    sees all of it. This samples the tree every ``interval_s`` and remembers each process
    (pid + start time) it ever saw with its latest utime+stime; only the last
    ``interval_s`` of a process that dies is missed.
    """

    def __init__(self, interval_s: float = 0.25) -> None:
        super().__init__(name="cpu-sampler", daemon=True)
        self._interval_s = interval_s
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._seen: dict[tuple[int, int], float] = {}  # (pid, start time) -> cpu seconds
        self._lock = threading.Lock()
        self._stop_requested = threading.Event()
        self.sample()

    def run(self) -> None:
        while not self._stop_requested.wait(self._interval_s):
            self.sample()

    def stop(self) -> None:
        self._stop_requested.set()

    @staticmethod
    def _stat_fields(pid: int) -> list[str] | None:
        try:
            with open(f"/proc/{pid}/stat") as f:
                raw = f.read()
        except OSError:
            return None
        # The command name may contain spaces; the fields after it are space separated.
        return raw[raw.rfind(")") + 2:].split()

    def sample(self) -> None:
        stats: dict[int, list[str]] = {}
        children: dict[int, list[int]] = defaultdict(list)
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                fields = self._stat_fields(int(entry))
                if fields is not None:
                    stats[int(entry)] = fields
                    children[int(fields[1])].append(int(entry))
        in_tree: set[int] = set()
        stack = [os.getpid()]
        while stack:
            pid = stack.pop()
            in_tree.add(pid)
            stack.extend(children.get(pid, []))
        with self._lock:
            for pid in in_tree | {pid for pid, _ in self._seen}:
                fields = stats.get(pid)
                if fields is None:
                    continue
                # After the name: utime, stime are stat fields 14, 15 (indexes 11, 12);
                # starttime is field 22 (index 19). Children's times are not added: every
                # descendant is tracked on its own.
                key = (pid, int(fields[19]))
                if pid in in_tree or key in self._seen:  # a reused pid outside the tree is not ours
                    self._seen[key] = (int(fields[11]) + int(fields[12])) / self._ticks

    def total(self) -> float:
        self.sample()
        with self._lock:
            return sum(self._seen.values())


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class LatencyBook:
    """Input timestamps per key, matched first-in first-out with the outputs as they appear.

    The Kafka peers key each output like its input; every peer keeps per-key order, so
    FIFO matching is exact even when keys repeat.
    """

    pending: dict[str, deque[tuple[float, float]]] = field(default_factory=lambda: defaultdict(deque))
    end_to_end_ms: list[float] = field(default_factory=list)
    take_to_output_ms: list[float] = field(default_factory=list)
    first_taken: float | None = None  # wall clock (time.time) of the first input taken
    last_output: float | None = None
    outputs: int = 0
    unmatched: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def taken(self, record_id: str, created_ms: float | None) -> None:
        """An input record was picked up; ``created_ms`` is its Kafka timestamp."""
        now = time.time()
        with self._lock:
            if self.first_taken is None:
                self.first_taken = now
            self.pending[record_id].append((created_ms if created_ms else now * 1000, now))

    def output(self, record_id: str | None, require_match: bool = False) -> None:
        """An output appeared. With ``require_match`` an output whose key no input of this
        run carried (left over from an earlier run on the same topic) is not counted."""
        now = time.time()
        with self._lock:
            queue = self.pending.get(record_id) if record_id is not None else None
            if require_match and not queue:
                self.unmatched += 1
                return
            self.outputs += 1
            self.last_output = now
            if queue:
                created_ms, taken_at = queue.popleft()
                self.end_to_end_ms.append(now * 1000 - created_ms)
                self.take_to_output_ms.append((now - taken_at) * 1000)


def take_ready(consumer: Any, max_messages: int, timeout_s: float) -> list[Any]:
    """Up to ``max_messages`` records, returned as soon as one is there (``[]`` after ``timeout_s``).

    ``consume(n, timeout)`` returns early only once n records arrived: at low rates it waits out the
    whole timeout, which would add up to ``timeout_s`` to every arrival time a reader notes.
    """
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    return [first, *consumer.consume(num_messages=max_messages - 1, timeout=0)] if max_messages > 1 else [first]


class OutputWatcher(threading.Thread):
    """Reads the output topic read_committed and notes each output's arrival.

    This is how "N outputs done" is decided for the Kafka peers: an output counts once
    a downstream reader can see it (for the exactly-once peer: once its transaction
    committed). It starts at the topic's current end and counts only outputs whose key an
    input of this run carried, so earlier runs on the same topic do not count (the end
    offset alone is not enough on the embedded broker: see the README of bench/peers).
    """

    def __init__(self, bootstrap: str, topic: str, count: int, book: LatencyBook,
                 on_done: Callable[[], None] | None = None) -> None:
        super().__init__(name="output-watcher", daemon=True)
        from confluent_kafka import Consumer

        self._count = count
        self._book = book
        self._on_done = on_done
        self.done = threading.Event()
        self._stop_requested = threading.Event()
        self.error: BaseException | None = None
        self._topic = topic
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": f"peer-watch-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": TANSU_CONSUMER_SETTINGS["fetch.wait.max.ms"],
        })
        self._assign_from_end()

    def _assign_from_end(self, wait_s: float = 60.0) -> None:
        """Assign every partition at its current end; waits (bounded) for the topic to exist."""
        from confluent_kafka import TopicPartition

        deadline = time.monotonic() + wait_s
        while True:
            metadata = self._consumer.list_topics(self._topic, timeout=15)
            topic = metadata.topics.get(self._topic)
            if topic is not None and topic.error is None and topic.partitions:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"output topic {self._topic!r} does not exist after {wait_s:.0f}s")
            time.sleep(0.2)
        assignment = []
        for p in topic.partitions:
            _, high = self._consumer.get_watermark_offsets(TopicPartition(self._topic, p), timeout=15)
            assignment.append(TopicPartition(self._topic, p, high))
        self._consumer.assign(assignment)

    def run(self) -> None:
        try:
            while not self._stop_requested.is_set() and self._book.outputs < self._count:
                for msg in take_ready(self._consumer, 500, 0.1):
                    if msg.error() is not None:
                        logger.warning("output watcher: %s", msg.error())
                        continue
                    key = msg.key()
                    self._book.output(key.decode() if key is not None else None, require_match=True)
            if self._book.outputs >= self._count:
                self.done.set()
                if self._on_done is not None:
                    self._on_done()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc
        finally:
            self._consumer.close()

    def stop(self) -> None:
        self._stop_requested.set()


def report(peer: str, book: LatencyBook, count: int, *, cpu_seconds: float,
           extra: dict[str, Any] | None = None, measure_latency: bool = True) -> dict[str, Any]:
    """Build and print the single JSON result line on stdout."""
    seconds = (book.last_output - book.first_taken) if book.first_taken and book.last_output else None
    result: dict[str, Any] = {
        "peer": peer,
        "records": book.outputs,
        "expected": count,
        "seconds": round(seconds, 3) if seconds is not None else None,
        "records_per_s": round(book.outputs / seconds, 2) if seconds else None,
        "cpu_seconds": round(cpu_seconds, 2),
        "cpu_ms_per_record": round(1000 * cpu_seconds / book.outputs, 3) if book.outputs else None,
    }
    if book.unmatched:
        result["unmatched_outputs"] = book.unmatched
    if measure_latency:
        for name, values in (("", book.end_to_end_ms), ("take_to_output_", book.take_to_output_ms)):
            for q in (50, 99):
                value = percentile(values, q)
                result[f"{name}p{q}_ms"] = round(value, 1) if value is not None else None
    if extra:
        result.update(extra)
    print(json.dumps(result), flush=True)
    return result


def cycled(items: Iterable[str], n: int) -> list[str]:
    pool = list(items)
    if not pool:
        raise ValueError("nothing to cycle")
    return [pool[i % len(pool)] for i in range(n)]


SEED_INPUT = Path(__file__).resolve().parents[2] / "examples" / "sentiment" / "resources" / "input.txt"


def seed_records(n: int, input_file: Path = SEED_INPUT, unique_ids: bool = True) -> list[dict[str, str]]:
    """The seed's input lines cycled to ``n`` records.

    With ``unique_ids`` the i-th record's id is ``<seed id>-<i>``, so every record is its
    own key (the seed has only 7 ids, which would otherwise serialise per-key processing).
    """
    lines = [line for line in input_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = []
    for i, line in enumerate(cycled(lines, n)):
        record = json.loads(line)
        if unique_ids:
            record["id"] = f"{record['id']}-{i}"
        records.append({"id": str(record["id"]), "text": str(record["text"])})
    return records
