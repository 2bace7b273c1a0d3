"""Chaos runs: a worker fleet under random SIGKILLs, SIGTERMs, joins and leaves, checked record by record.

The quick variant runs in the test suite (test_chaos.py), the full one from ``bench/chaos.py``.
Input record ``i`` has key ``k{i % keys}`` and value ``{"key", "seq": i // keys}``; the
CountingAgent asks the stub model about it and outputs ``{"key", "seq", "count", "answer"}``.
The stub's answer carries a call number, so an output names the one LLM call it used.

What the analysis counts, from the output topic and the workers' logs:

* lost: inputs with no output at all. An input whose only output is in an excused transaction (below)
  is counted apart: the leaky broker hands that transaction's changelog records to the successor's
  restore as well, so the successor takes the input as done and the leaked copy is its output.
* duplicates: inputs with more than one committed output. On a broker that delivers aborted
  records to read_committed consumers (the embedded Tansu, see BROKER.md) a copy is not counted as
  committed when it was produced in the transaction a SIGKILLed worker left open (the highest
  transaction of that process seen in the output, above the last one its log shows committed) or in a
  transaction the worker itself aborted and retried (logged). Such copies are reported as traced.
* order violations: per key, committed outputs whose ``seq`` does not increase; count violations:
  committed outputs whose ``count`` is not ``seq + 1`` (state lost or applied twice).
* repeated committed LLM calls: the model was called for an input after the call whose answer was
  committed (the committed answer is not the input's last call). For the CountingAgent a call's
  result and its output are committed together: nothing can be collected between them.
* recovery: for each kill or SIGTERM, the input partitions the victim held (its assigned/revoking log lines);
  seconds from the signal until each of them has output from another process, the maximum of those.
  For a broker-kill (a multi-node Apache Kafka cluster: one node SIGKILLed, started again
  ``broker_down_s`` later): the longest any output partition went without a newly readable record
  (read_committed, as received) from the kill until the next event. Output timestamps would not do:
  workers keep producing while their commits wait for the new leaders.

Events wait until the previous worker event has recovered (``recover_before_events``): each
recovery is then that event's own, not stretched by the next one (measured on 3 nodes: a second kill
of the restarted victim before its first commit made the first kill's recovery 18.7 s, the sum of
both). Events wait until the group is stable (``settle_before_events``). The embedded broker keeps a
SIGKILLed group leader as leader when it dies during a rebalance: every later JoinGroup names the
dead member as leader and SyncGroup answers "rebalance in progress" for ever, so no member is ever
assigned a partition again (seen in the first full run). Apache Kafka evicts it after
``session.timeout.ms``; against it the setting can be turned off.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from agentplan.testing.llm_stub import StubLLMServer, StubReply, default_responder
from tests.worker.integration.harness import TopicTail, WorkerProcess, header, set_consumer_group_session

logger = logging.getLogger(__name__)

AGENT = "tests.worker.integration.agents:CountingAgent"
# kill/term restart the same instance; leave (SIGTERM) and crash (SIGKILL) do not. Random schedules
# leave out crash: the fleet would only shrink.
# broker-kill SIGKILLs a broker node (the app's group coordinator) and starts it again: see BrokerChaos.
BROKER_KILL = "broker-kill"
NODE_START_TIMEOUT_S = 180.0  # a deadline: one JVM restarting on a busy 2-core machine has taken 40 s
EVENT_KINDS = ("kill", "term", "join", "leave", "crash", BROKER_KILL)
_ANSWER_ID = re.compile(r"#(\d+)$")
_COMMITTED = re.compile(r"committed (\S+)#(\d+) in ")
_ABORTED = re.compile(r"transaction (\S+#\d+) aborted")
_OWNERSHIP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (?:INFO|WARNING) worker\.rebalance: "
                        r"(assigned|revoking|lost) (\[.*\])", re.MULTILINE)
_PARTITION = re.compile(r"\[(\d+)\]'|, (\d+)\)")  # 'topic[3]' in assigned lines, ('topic', 3) in the others


@dataclass(frozen=True)
class ChaosEvent:
    at_s: float  # seconds after production starts
    kind: str
    instance: str


@dataclass
class ChaosConfig:
    partitions: int = 12
    records: int = 20_000
    keys: int = 2_000
    workers: int = 3
    rate_per_s: float = 100.0
    seed: int = 6
    llm_latency_ms: float = 20.0
    interval_s: tuple[float, float] = (5.0, 10.0)
    min_workers: int = 2
    max_workers: int = 4
    quiet_tail_s: float = 8.0  # no event this close to the end of production: its recovery stays measurable
    drain_timeout_s: float = 240.0
    # Apply an event only once the group is stable (every live worker holds partitions, all are
    # assigned). The embedded broker never evicts a group leader SIGKILLed in the middle of a
    # rebalance: the group then stays leaderless for good (see the module docstring).
    settle_before_events: bool = True
    settle_timeout_s: float = 90.0
    # Apply an event only once every partition the previous worker event's victim held has output from
    # another process (bounded by settle_timeout_s): each recovery figure is then one event's.
    recover_before_events: bool = True
    schedule: list[ChaosEvent] | None = None  # explicit events instead of the seeded ones
    group_protocol: str = "classic"  # or "consumer" (KIP-848), with the same session as a group config
    # The workers' session timeout. Against a cluster of 3 it must outlast a coordinator's failover (the
    # brokers' broker.session.timeout.ms, 9 s by default, plus an election), or a coordinator crash costs
    # every classic member its partitions and a rejoin.
    session_timeout_ms: int = 6000
    # No event before this many seconds of production: on 2 cores, three JVMs started together take
    # 1-5 s per transaction commit for their first ~30 s, which no worker setting changes.
    warmup_s: float = 0.0
    # broker-kill events the seeded schedule adds (run_chaos then needs ``brokers``, a multi-node cluster).
    broker_kills: int = 0
    broker_down_s: float = 10.0  # a killed node is started again this long after its SIGKILL
    # No worker event from a broker kill until this much later, so the outage it causes is its own.
    broker_window_s: float = 25.0

    @property
    def production_s(self) -> float:
        return self.records / self.rate_per_s


def plan_schedule(config: ChaosConfig) -> list[ChaosEvent]:
    """The seeded event schedule: one event every ``interval_s``, fleet size kept within bounds."""
    if config.schedule is not None:
        return list(config.schedule)
    rng = random.Random(config.seed)
    live = [f"w{i + 1}" for i in range(config.workers)]
    next_id = config.workers + 1
    events = []
    at = config.warmup_s + rng.uniform(*config.interval_s)
    while at <= config.production_s - config.quiet_tail_s:
        kinds = ["kill", "term"]
        kinds += ["join"] if len(live) < config.max_workers else []
        kinds += ["leave"] if len(live) > config.min_workers else []
        kind = rng.choice(kinds)
        if kind == "join":
            instance = f"w{next_id}"
            next_id += 1
            live.append(instance)
        else:
            instance = rng.choice(sorted(live))
            if kind == "leave":
                live.remove(instance)
        events.append(ChaosEvent(round(at, 2), kind, instance))
        at += rng.uniform(*config.interval_s)
    for n in range(config.broker_kills):
        events = _with_broker_kill(events, config, config.production_s * (n + 1) / (config.broker_kills + 1))
    return events


def _with_broker_kill(events: list[ChaosEvent], config: ChaosConfig, target_s: float) -> list[ChaosEvent]:
    """Insert a broker-kill a full interval after the last worker event before ``target_s`` and move the
    later events ``broker_window_s`` past it; those pushed beyond the quiet tail are dropped (the last
    ones: nothing after them refers to their instances)."""
    before = [e for e in events if e.at_s <= target_s]
    after = [e for e in events if e.at_s > target_s]
    at = round(before[-1].at_s + config.interval_s[1], 2) if before else round(target_s, 2)
    shift = max(0.0, at + config.broker_window_s - after[0].at_s) if after else 0.0
    moved = [ChaosEvent(round(e.at_s + shift, 2), e.kind, e.instance) for e in after]
    last = config.production_s - config.quiet_tail_s
    return [*before, ChaosEvent(at, BROKER_KILL, "coordinator"), *(e for e in moved if e.at_s <= last)]


class CallLedger:
    """Stub responder that numbers every model call and remembers the numbers per prompt."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._calls: dict[str, list[int]] = defaultdict(list)

    def __call__(self, request: dict[str, Any]) -> StubReply:
        reply = default_responder(request)
        prompt = str(request["messages"][-1].get("content"))
        with self._lock:
            call = next(self._ids)
            self._calls[prompt].append(call)
        return StubReply(content=f"{reply.content} #{call}")

    def calls(self, prompt: str) -> list[int]:
        with self._lock:
            return list(self._calls.get(prompt, ()))

    @property
    def total(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._calls.values())


@dataclass
class Incarnation:
    """One worker process; a restart of the same instance is a new incarnation."""

    instance: str
    process: WorkerProcess
    started: float
    ended: float | None = None
    end: str | None = None  # "kill" or "term"
    exit_code: int | None = None
    prefix: str | None = None  # its transactions are named <prefix>#<n>
    last_committed: int = 0
    aborted_txns: set[str] = field(default_factory=set)
    ownership: list[tuple[float, str, set[int]]] = field(default_factory=list)  # (when, assigned/revoking, parts)

    def read_log(self) -> None:
        text = self.process.log_path.read_text(errors="replace")
        for match in _COMMITTED.finditer(text):
            self.prefix = match.group(1)
            self.last_committed = max(self.last_committed, int(match.group(2)))
        self.aborted_txns = set(_ABORTED.findall(text))
        for match in _OWNERSHIP.finditer(text):
            when = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()  # local time, as logged
            self.ownership.append((when, match.group(2), {int(a or b) for a, b in _PARTITION.findall(match.group(3))}))

    def partitions_at(self, when: float) -> set[int]:
        """Partitions this process held at wall time ``when``, from its assigned/revoking log lines."""
        held: set[int] = set()
        for at, what, parts in self.ownership:
            if at > when:
                break
            held = held | parts if what == "assigned" else held - parts
        return held


class Fleet:
    """Worker processes of one app, by instance id; every incarnation is kept for the analysis."""

    def __init__(self, bootstrap: str, input_topic: str, output_topic: str, app_id: str, work_dir: Path,
                 env: dict[str, str], group_protocol: str = "classic", session_timeout_ms: int = 6000) -> None:
        self.bootstrap, self.input_topic, self.output_topic = bootstrap, input_topic, output_topic
        self.app_id, self.work_dir, self.group_protocol = app_id, work_dir, group_protocol
        self.session_timeout_ms = session_timeout_ms
        self.env = {**env, "AGENTFLEET_TEST_TRACE_COMMITS": "1"}
        self.live: dict[str, Incarnation] = {}
        self.incarnations: list[Incarnation] = []

    def start(self, instance: str) -> Incarnation:
        process = WorkerProcess(self.bootstrap, AGENT, self.input_topic, self.output_topic, self.app_id,
                                self.work_dir / f"state-{instance}", instance, self.work_dir, env=self.env,
                                group_protocol=self.group_protocol, session_timeout_ms=self.session_timeout_ms)
        incarnation = Incarnation(instance, process, time.time())
        process.start()
        self.live[instance] = incarnation
        self.incarnations.append(incarnation)
        return incarnation

    def stop(self, instance: str, how: str) -> Incarnation:
        incarnation = self.live.pop(instance)
        incarnation.ended, incarnation.end = time.time(), how
        incarnation.exit_code = incarnation.process.kill() if how == "kill" else incarnation.process.terminate()
        return incarnation

    def apply(self, event: ChaosEvent) -> float:
        """Carry out ``event``; returns the wall time of its signal (or of the join)."""
        if event.kind == "join":
            return self.start(event.instance).started
        incarnation = self.stop(event.instance, "kill" if event.kind in ("kill", "crash") else "term")
        if event.kind in ("kill", "term"):
            self.start(event.instance)
        assert incarnation.ended is not None
        return incarnation.ended

    def wait_recovered(self, victim: Incarnation, at: float, outputs: TopicTail, timeout_s: float) -> bool:
        """Wait until every input partition ``victim`` held at ``at`` has output, produced after ``at``, from
        another process (by the source and transaction headers); False at the deadline."""
        victim.read_log()
        held = {str(p) for p in victim.partitions_at(at)}
        own = f"{victim.prefix}#" if victim.prefix else None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            covered = {header(m, "agentfleet.source.partition") for m in outputs.records
                       if m.timestamp()[1] / 1000 > at and not (own and (header(m, "agentfleet.txn") or "")
                                                                .startswith(own))}
            if held <= covered:
                return True
            time.sleep(0.2)  # bounded; no event announces an output's arrival to this reader
        return False

    def settled(self, partitions: int) -> bool:
        """Every live worker is ready and holds partitions, and together they hold all of them."""
        held = 0
        for incarnation in self.live.values():
            status, body = incarnation.process.http("/readyz")
            assigned = json.loads(body).get("assigned_partitions", 0) if body.startswith("{") else 0
            if status != 200 or assigned == 0:
                return False
            held += assigned
        return held == partitions

    def wait_settled(self, partitions: int, timeout_s: float) -> float | None:
        """Seconds until the group is settled (seen twice, 0.5 s apart), or None at the deadline."""
        started = time.monotonic()
        streak = 0
        while time.monotonic() - started < timeout_s:
            streak = streak + 1 if self.settled(partitions) else 0
            if streak >= 2:
                return time.monotonic() - started
            time.sleep(0.5)
        return None

    def stop_all(self) -> None:
        for instance in list(self.live):
            self.stop(instance, "term")

    def kill_all(self) -> None:
        for incarnation in self.incarnations:
            if incarnation.process.running():
                incarnation.process.kill()


class NodeControl(Protocol):
    """What a broker-kill needs of the cluster's launcher (worker.kafka.apache.ApacheKafka)."""

    nodes: int

    def kill_node(self, index: int) -> None: ...

    def start_node(self, index: int, timeout_s: float = ...) -> None: ...


class BrokerChaos:
    """broker-kill events: SIGKILL the node coordinating the app's group, start it again ``down_s`` later.

    The group coordinator is the node whose loss touches the most: group membership, and the offsets
    every transaction commits. The restart runs on a thread so that the schedule goes on meanwhile.
    """

    def __init__(self, cluster: NodeControl, bootstrap: str, app_id: str, output_topic: str, down_s: float) -> None:
        self.cluster, self.app_id, self.output_topic, self.down_s = cluster, app_id, output_topic, down_s
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self.kills: list[dict[str, Any]] = []  # per kill: node, what it led, kill and restart wall times
        self._restart: threading.Thread | None = None
        self.error: BaseException | None = None

    def apply(self, event: ChaosEvent) -> float:
        """Kill the coordinator now; returns the wall time of the SIGKILL."""
        self.join()  # one node down at a time: the topics' min.insync.replicas allow no more
        self.check()
        node = self._coordinator()
        led = self._led_partitions(node)
        killed = time.time()
        self.cluster.kill_node(node - 1)  # the launcher numbers its nodes 1..n in start order
        kill: dict[str, Any] = {"node": node, "output_partitions_led": led, "killed": killed, "restarted": None}
        self.kills.append(kill)
        self._restart = threading.Thread(target=self._start_again, args=(kill,), name="broker-restart", daemon=True)
        self._restart.start()
        return killed

    def _start_again(self, kill: dict[str, Any]) -> None:
        time.sleep(self.down_s)  # the outage itself
        try:
            self.cluster.start_node(kill["node"] - 1, timeout_s=NODE_START_TIMEOUT_S)
            kill["restarted"] = time.time()
        except BaseException as exc:  # noqa: BLE001 - reported by run_chaos
            self.error = exc

    def join(self) -> None:
        """Wait for a pending restart (also on the way out: the cluster must not be stopped under it)."""
        if self._restart is not None:
            self._restart.join()

    def check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"a killed broker node did not start again: {self.error}")

    def _coordinator(self) -> int:
        future = self.admin.describe_consumer_groups([self.app_id])[self.app_id]
        return int(future.result(timeout=30).coordinator.id)

    def _led_partitions(self, node: int) -> list[int]:
        try:
            topic = self.admin.list_topics(self.output_topic, timeout=10).topics[self.output_topic]
        except KafkaException:
            return []
        return sorted(p for p, meta in topic.partitions.items() if meta.leader == node)


class ArrivalClock(threading.Thread):
    """When each output partition's records became readable: wall time of receipt by a read_committed reader.

    A record's own timestamp says when a worker produced it, not when its transaction committed;
    after a broker kill workers go on producing while their commits wait for new leaders.
    """

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        super().__init__(name=f"arrivals-{topic}", daemon=True)
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"arrivals-{topic}",
                                   "enable.auto.commit": False, "isolation.level": "read_committed",
                                   "fetch.wait.max.ms": 10})
        self._consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self.arrivals: dict[int, list[float]] = defaultdict(list)
        self._stopping = threading.Event()

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                batch = self._consumer.consume(num_messages=1000, timeout=0.05)
                now = time.time()
                for msg in batch:
                    partition = msg.partition()
                    if msg.error() is None and partition is not None:
                        self.arrivals[partition].append(now)
        finally:
            self._consumer.close()  # on this thread: librdkafka calls from another block behind consume()

    def stop(self) -> None:
        self._stopping.set()
        self.join(30)

    def longest_outage(self, start: float, end: float) -> float | None:
        """Over all partitions, the longest time without a new readable record from ``start`` on, counting
        the gaps that begin before ``end``; None if a partition had nothing readable after ``start``."""
        longest = 0.0
        for times in self.arrivals.values():
            previous = start
            for at in times:
                if at <= start:
                    continue
                if previous >= end:
                    break
                longest, previous = max(longest, at - previous), at
            if previous == start:
                return None
        return round(longest, 2)


class PacedProducer(threading.Thread):
    """Produce the input at ``rate_per_s`` so that events hit a fleet that is busy."""

    def __init__(self, bootstrap: str, topic: str, config: ChaosConfig) -> None:
        super().__init__(name="chaos-producer", daemon=True)
        self.topic, self.config = topic, config
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
        self.produced = 0
        self.finished_at: float | None = None  # wall time the last record was delivered
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            started = time.monotonic()
            keys = self.config.keys
            while self.produced < self.config.records:
                due = min(self.config.records, int((time.monotonic() - started) * self.config.rate_per_s) + 1)
                for i in range(self.produced, due):
                    key = f"k{i % keys}"
                    self.producer.produce(self.topic, key=key, value=json.dumps({"key": key, "seq": i // keys}))
                self.produced = due
                self.producer.poll(0)
                time.sleep(0.02)  # pacing, not synchronisation
            if self.producer.flush(60):
                raise RuntimeError("input not delivered within 60s")
            self.finished_at = time.time()
        except BaseException as exc:  # noqa: BLE001 - reported by run_chaos
            self.error = exc


def _value(msg: Message) -> dict[str, Any]:
    return json.loads(msg.value())  # type: ignore[no-any-return]


def wait_for_distinct(tail: TopicTail, expected: int, timeout_s: float) -> int:
    """Poll the tail until it holds ``expected`` distinct (key, seq) outputs; returns how many it holds."""
    seen: set[tuple[str, int]] = set()
    done = 0
    deadline = time.monotonic() + timeout_s
    while True:
        records = tail.records
        for msg in records[done:]:
            value = _value(msg)
            seen.add((value["key"], value["seq"]))
        done = len(records)
        if len(seen) >= expected or time.monotonic() >= deadline:
            return len(seen)
        time.sleep(0.25)


def run_chaos(config: ChaosConfig, bootstrap: str, input_topic: str, output_topic: str, dlq_topic: str,
              app_id: str, stub_url: str, ledger: CallLedger, work_dir: Path, hides_aborted: bool,
              echo: Callable[[str], None] = logger.info, brokers: NodeControl | None = None) -> dict[str, Any]:
    """Run the fleet through the schedule, drain, stop everything gracefully and analyse.

    ``brokers``: the cluster's launcher, for broker-kill events (a cluster of 3 nodes, whose topics
    survive the loss of one).
    """
    schedule = plan_schedule(config)
    echo("schedule: " + ", ".join(f"{e.at_s}s {e.kind} {e.instance}" for e in schedule))
    broker_chaos = clock = None
    if any(e.kind == BROKER_KILL for e in schedule):
        if brokers is None or brokers.nodes < 3:
            raise ValueError("broker-kill events need brokers=, a cluster of 3 nodes")
        broker_chaos = BrokerChaos(brokers, bootstrap, app_id, output_topic, config.broker_down_s)
        clock = ArrivalClock(bootstrap, output_topic, config.partitions)
        clock.start()
    if config.group_protocol == "consumer":
        set_consumer_group_session(bootstrap, app_id, config.session_timeout_ms)
    fleet = Fleet(bootstrap, input_topic, output_topic, app_id, work_dir,
                  {"OPENAI_BASE_URL": stub_url, "OPENAI_API_KEY": "test"}, config.group_protocol,
                  config.session_timeout_ms)
    outputs = TopicTail(bootstrap, output_topic, config.partitions).start()
    dlq = TopicTail(bootstrap, dlq_topic, config.partitions).start()
    applied: list[dict[str, Any]] = []
    try:
        for i in range(config.workers):
            fleet.start(f"w{i + 1}")
        for incarnation in fleet.live.values():  # chaos starts on a settled fleet
            incarnation.process.wait_ready(timeout_s=90, min_partitions=1)
        if fleet.wait_settled(config.partitions, config.settle_timeout_s) is None:
            raise RuntimeError("the initial fleet never settled")
        producer = PacedProducer(bootstrap, input_topic, config)
        start = time.time()
        producer.start()
        stuck = False
        quiet_until = 0.0  # a broker kill's window: the run may lag its schedule, the window still holds
        previous: tuple[Incarnation, float] | None = None  # the last worker event's victim and signal time
        for event in schedule:
            delay = max(start + event.at_s, quiet_until) - time.time()
            if delay > 0:
                time.sleep(delay)  # the schedule itself
            if config.recover_before_events and previous is not None and \
                    not fleet.wait_recovered(*previous, outputs, config.settle_timeout_s):
                echo(f"{time.time() - start:7.1f}s {previous[0].instance}'s partitions produced no output from "
                     f"another process within {config.settle_timeout_s}s")
            if not producer.is_alive():
                echo(f"{time.time() - start:7.1f}s input complete: the remaining events are skipped")
                break
            if config.settle_before_events and fleet.wait_settled(config.partitions, config.settle_timeout_s) is None:
                stuck = True
                echo(f"{time.time() - start:7.1f}s group not settled within {config.settle_timeout_s}s: "
                     "no further events")
                break
            if time.time() - start > config.production_s - config.quiet_tail_s:
                # A run behind its schedule (slow settling) keeps the quiet tail too: an event with no input
                # left after it has no recovery to measure.
                echo(f"{time.time() - start:7.1f}s within {config.quiet_tail_s:g}s of the input's end: "
                     "the remaining events are skipped")
                break
            at = broker_chaos.apply(event) if broker_chaos is not None and event.kind == BROKER_KILL \
                else fleet.apply(event)
            applied.append({**asdict(event), "actual_s": round(at - start, 2), "wall": at})
            previous = None
            if event.kind in ("kill", "term", "leave", "crash"):
                previous = next((i, at) for i in fleet.incarnations if i.instance == event.instance and i.ended == at)
            if event.kind == BROKER_KILL:
                quiet_until = at + config.broker_window_s
            echo(f"{at - start:7.1f}s {event.kind:5} {event.instance}")
        producer.join(config.production_s + 120)
        if producer.error is not None or producer.is_alive():
            raise RuntimeError(f"producer failed: {producer.error}")
        produced_s = (producer.finished_at or time.time()) - start
        distinct = wait_for_distinct(outputs, config.records, config.drain_timeout_s)
        drained_s = time.time() - start
        echo(f"{drained_s:7.1f}s drained: {distinct}/{config.records} distinct outputs")
        fleet.stop_all()
        caught_up = outputs.wait_caught_up() and dlq.wait_caught_up()
    finally:
        fleet.kill_all()
        if broker_chaos is not None:
            broker_chaos.join()
        records, dead = outputs.stop(), dlq.stop()
        if clock is not None:
            clock.stop()
    if broker_chaos is not None and clock is not None:
        broker_chaos.check()
        _broker_kill_outages(applied, broker_chaos, clock, start + drained_s)
    for incarnation in fleet.incarnations:
        incarnation.read_log()
    report = analyse(config, records, fleet.incarnations, applied, ledger, hides_aborted, app_id)
    report.update({
        "dlq_records": len(dead),
        "production_s": round(produced_s, 1),
        "drained_after_s": round(drained_s, 1),
        "graceful_exit_codes": sorted({i.exit_code for i in fleet.incarnations if i.end == "term"}),
        "broker_hides_aborted": hides_aborted,
        "read_to_the_end": caught_up,
        "group_stuck": stuck,
    })
    if broker_chaos is not None:
        report["broker_kills"] = [{"node": k["node"], "output_partitions_led": k["output_partitions_led"],
                                   "killed_s": round(k["killed"] - start, 2),
                                   "restarted_s": round(k["restarted"] - start, 2) if k["restarted"] else None}
                                  for k in broker_chaos.kills]
    return report


def _broker_kill_outages(applied: list[dict[str, Any]], broker_chaos: BrokerChaos, clock: ArrivalClock,
                         drained: float) -> None:
    """Give each applied broker-kill its node, the output partitions it led and its recovery: the longest
    any output partition went without a readable record from the kill until the next event (or the drain)."""
    kills = iter(broker_chaos.kills)
    for n, event in enumerate(applied):
        if event["kind"] != BROKER_KILL:
            continue
        kill = next(kills)
        end = applied[n + 1]["wall"] if n + 1 < len(applied) else drained
        event.update({"node": kill["node"], "partitions": kill["output_partitions_led"],
                      "recovery_s": clock.longest_outage(event["wall"], end)})


def run_chaos_on(kafka: Any, config: ChaosConfig, app_id: str, work_dir: Path) -> dict[str, Any]:
    """run_chaos on a test session's cluster, with fresh topics and a stub model that keeps the ledger."""
    input_topic = kafka.new_topic("chaos-in", partitions=config.partitions)
    output_topic = kafka.new_topic("chaos-out", partitions=config.partitions)
    ledger = CallLedger()
    with StubLLMServer(responder=ledger, latency_ms=config.llm_latency_ms) as stub:
        return run_chaos(config, kafka.bootstrap_servers, input_topic, output_topic, f"{input_topic}-dlq", app_id,
                         stub.base_url, ledger, work_dir, hides_aborted=kafka.hides_aborted)


def _incarnation_of(prefix: str, incarnations: list[Incarnation], app_id: str) -> Incarnation | None:
    known = next((i for i in incarnations if i.prefix == prefix), None)
    if known is not None:
        return known
    # No commit logged (killed before its first commit): match instance id and start time.
    body, _, millis = prefix.rpartition("@")
    instance, at = body[len(app_id) + 1:], int(millis) / 1000
    candidates = [i for i in incarnations if i.instance == instance and i.started - 5 <= at
                  and (i.ended is None or at <= i.ended)]
    return max(candidates, key=lambda i: i.started) if candidates else None


def analyse(config: ChaosConfig, records: list[Message], incarnations: list[Incarnation],
            events: list[dict[str, Any]], ledger: CallLedger, hides_aborted: bool, app_id: str) -> dict[str, Any]:
    copies: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    prefixes: dict[str, int] = {}  # prefix -> highest transaction seen in the output
    for msg in records:
        value = _value(msg)
        txn = header(msg, "agentfleet.txn") or ""
        prefix, _, seq = txn.rpartition("#")
        prefixes[prefix] = max(prefixes.get(prefix, 0), int(seq))
        answer = _ANSWER_ID.search(value.get("answer") or "")
        copies[(value["key"], value["seq"])].append({
            "txn": txn, "prefix": prefix, "count": value["count"], "answer": int(answer.group(1)) if answer else None,
            "partition": int(header(msg, "agentfleet.source.partition") or -1),
            "ts": msg.timestamp()[1] / 1000})

    # Transactions whose records a broker that hides aborted records would not have delivered.
    excused: dict[str, str] = {}
    if not hides_aborted:
        for prefix, highest in prefixes.items():
            incarnation = _incarnation_of(prefix, incarnations, app_id)
            if incarnation is None:
                continue
            if incarnation.end == "kill" and highest > incarnation.last_committed:
                excused[f"{prefix}#{highest}"] = "open when its producer was SIGKILLed"
            for txn in incarnation.aborted_txns:
                excused[txn] = "aborted and retried by the worker"
    committed = {ks: [c for c in cs if c["txn"] not in excused] for ks, cs in copies.items()}
    expected = {(f"k{i % config.keys}", i // config.keys) for i in range(config.records)}
    lost = sorted(ks for ks in expected if not copies.get(ks))
    # Only copy in an excused transaction: the same broker also hands that transaction's changelog records
    # to the successor's restore, so the successor takes the input as done. The leaked copy is then the
    # output; the order and count checks below include it, which shows the state agrees with it.
    leaked_only = {ks for ks in expected if copies.get(ks) and not committed.get(ks)}
    effective = {ks: committed[ks] or copies[ks][:1] for ks in copies}
    unexpected = sorted(ks for ks in copies if ks not in expected)
    duplicates = {ks: cs for ks, cs in committed.items() if len(cs) > 1}
    traced = sum(len(cs) - len(committed[ks]) for ks, cs in copies.items())
    traced_with_committed_twin = sum(len(cs) - len(committed[ks]) for ks, cs in copies.items() if committed[ks])

    # Per key, in output-partition order (all of a key's outputs share a partition).
    order_violations = count_violations = 0
    last_seq: dict[str, int] = {}
    for msg in records:
        value = _value(msg)
        key, seq = value["key"], value["seq"]
        if (header(msg, "agentfleet.txn") or "") in excused and (key, seq) not in leaked_only:
            continue
        if seq <= last_seq.get(key, -1):
            order_violations += 1
        last_seq[key] = max(seq, last_seq.get(key, -1))
        if value["count"] != seq + 1:
            count_violations += 1

    repeated_llm = []
    for (key, seq), cs in effective.items():
        calls = ledger.calls(f"count <{key}|{seq}>")
        if any(c["answer"] != max(calls, default=None) for c in cs):
            repeated_llm.append((key, seq, [c["answer"] for c in cs], calls))

    recovery = _recovery(events, copies, incarnations, app_id)
    measured = [e["recovery_s"] for e in recovery if e.get("recovery_s") is not None]
    return {
        "config": {k: v for k, v in asdict(config).items() if k != "schedule"},
        "events": [{k: v for k, v in e.items() if k != "wall"} for e in recovery],
        "records_in": config.records,
        "outputs_read": len(records),
        "distinct_outputs": len(expected) - len(lost),
        "delivered_only_by_a_killed_transaction": len(leaked_only),
        "lost": len(lost),
        "lost_examples": lost[:10],
        "unexpected_outputs": len(unexpected),
        "duplicates": sum(len(cs) - 1 for cs in duplicates.values()),
        "duplicate_examples": [[ks, cs] for ks, cs in list(duplicates.items())[:5]],
        "traced_copies": traced,
        "traced_copies_with_committed_twin": traced_with_committed_twin,
        "excused_transactions": excused,
        "order_violations": order_violations,
        "count_violations": count_violations,
        "llm_calls": ledger.total,
        "repeated_committed_llm_calls": len(repeated_llm),
        "repeated_llm_examples": repeated_llm[:5],
        "max_recovery_s": max(measured) if measured else None,
        "incarnations": [{"instance": i.instance, "prefix": i.prefix, "end": i.end, "exit_code": i.exit_code,
                          "last_committed_txn": i.last_committed} for i in incarnations],
    }


def _recovery(events: list[dict[str, Any]], copies: dict[tuple[str, int], list[dict[str, Any]]],
              incarnations: list[Incarnation], app_id: str) -> list[dict[str, Any]]:
    """Per kill/term/leave/crash: the partitions the victim held (its log) and when each produced output again;
    per join: see _takeover."""
    by_partition: dict[int, list[tuple[float, str]]] = defaultdict(list)
    for cs in copies.values():
        for c in cs:
            by_partition[c["partition"]].append((c["ts"], c["prefix"]))
    for timeline in by_partition.values():
        timeline.sort()
    out = []
    for event in events:
        entry = dict(event)
        victim = next((i for i in incarnations if i.instance == event["instance"] and i.ended == event["wall"]), None)
        if event["kind"] != "join" and victim is not None:
            held = sorted(victim.partitions_at(event["wall"]))
            gaps = []
            for partition in held:
                after = [ts for ts, prefix in by_partition.get(partition, [])
                         if ts > event["wall"] and _incarnation_of(prefix, incarnations, app_id) is not victim]
                gaps.append(after[0] - event["wall"] if after else None)
            entry["partitions"] = held
            entry["recovery_s"] = round(max(gaps), 2) if gaps and None not in gaps else None
        joiner = next((i for i in incarnations if i.instance == event["instance"] and i.started == event["wall"]), None)
        if event["kind"] == "join" and joiner is not None and joiner.ownership:
            entry.update(_takeover(event["wall"], joiner, by_partition, incarnations, app_id))
        out.append(entry)
    return out


def _takeover(started: float, joiner: Incarnation, by_partition: dict[int, list[tuple[float, str]]],
              incarnations: list[Incarnation], app_id: str) -> dict[str, Any]:
    """A join: the partitions first assigned to the newcomer (its log), seconds from its start until
    its first output, and the longest a partition it took over went without output (from the previous
    owner's last output to the newcomer's first)."""
    taken = sorted(joiner.ownership[0][2])
    firsts, pauses = [], []
    for partition in taken:
        timeline = by_partition.get(partition, [])
        mine = [n for n, (_ts, prefix) in enumerate(timeline)
                if _incarnation_of(prefix, incarnations, app_id) is joiner]
        if not mine:
            return {"partitions": taken, "first_output_s": None, "pause_s": None}
        firsts.append(timeline[mine[0]][0])
        if mine[0] > 0:
            pauses.append(timeline[mine[0]][0] - timeline[mine[0] - 1][0])
    return {"partitions": taken, "first_output_s": round(min(firsts) - started, 2),
            "pause_s": round(max(pauses), 2) if pauses else None}


def violations(report: dict) -> list[str]:
    """The invariants a chaos run must keep; empty when all hold."""
    checks = {
        "lost": report["lost"], "duplicates": report["duplicates"], "order_violations": report["order_violations"],
        "count_violations": report["count_violations"], "unexpected_outputs": report["unexpected_outputs"],
        "repeated_committed_llm_calls": report["repeated_committed_llm_calls"], "dlq_records": report["dlq_records"],
    }
    failed = [f"{name}={value}" for name, value in checks.items() if value]
    if report["group_stuck"]:
        failed.append("group did not settle between events")
    if not report["read_to_the_end"]:
        failed.append("output not read to its high watermarks")
    if report["graceful_exit_codes"] not in ([], [0]):
        failed.append(f"graceful_exit_codes={report['graceful_exit_codes']}")
    return failed


def render_markdown(report: dict[str, Any], command: str) -> str:
    """The report as a markdown page for bench/results/."""
    c = report["config"]
    lines = [
        "# Chaos run", "",
        f"Command: `{command}`", "",
        f"{c['workers']} workers, {c['partitions']} partitions, {report['records_in']} records over {c['keys']} keys "
        f"at {c['rate_per_s']:.0f}/s, CountingAgent with one stub LLM call per record "
        f"({c['llm_latency_ms']:.0f} ms), seed {c['seed']}, events every {c['interval_s'][0]:.0f}-"
        f"{c['interval_s'][1]:.0f} s"
        + (f" after a {c['warmup_s']:g} s warm-up" if c.get("warmup_s") else "")
        + f". Broker hides aborted records: {report['broker_hides_aborted']}.", "",
    ]
    broker = report.get("broker")  # set by bench/chaos.py
    if broker:
        lines += [f"Broker: {broker['description']}. Workers' consumer group protocol: {broker['group_protocol']}"
                  + (f", session timeout {report['session_timeout_s']:g} s" if "session_timeout_s" in report else "")
                  + ".", ""]
    lines += ["| figure | value |", "|---|---|"]
    rows = [
        ("records in", report["records_in"]), ("outputs read (all copies)", report["outputs_read"]),
        ("distinct outputs", report["distinct_outputs"]), ("lost", report["lost"]),
        ("delivered only by a killed producer's open transaction (broker leak)",
         report["delivered_only_by_a_killed_transaction"]),
        ("duplicates (committed)", report["duplicates"]),
        ("excused transactions (aborted records a leaky broker delivered)", len(report["excused_transactions"])),
        ("copies from a killed producer's open transaction", report["traced_copies"]),
        ("per-key order violations", report["order_violations"]),
        ("count state jumps", report["count_violations"]),
        ("LLM calls (all)", report["llm_calls"]),
        ("repeated committed LLM calls", report["repeated_committed_llm_calls"]),
        ("DLQ records", report["dlq_records"]),
        ("max recovery (s)", report["max_recovery_s"]),
        ("production (s) / drained after (s)", f"{report['production_s']} / {report['drained_after_s']}"),
        ("graceful exit codes", report["graceful_exit_codes"]),
    ]
    lines += [f"| {name} | {value} |" for name, value in rows]
    lines += ["", "## Events", "",
              "| planned (s) | actual (s) | event | instance | partitions it held | recovery (s) |",
              "|---|---|---|---|---|---|"]
    for e in report["events"]:
        lines.append(f"| {e['at_s']} | {e['actual_s']} | {e['kind']} | {e['instance']} | "
                     f"{e.get('partitions', '')} | {e.get('recovery_s', '')} |")
    lines += ["", "kill = SIGKILL and restart, term = SIGTERM and restart, join = a new worker, "
              "leave = SIGTERM without restart, crash = SIGKILL without restart. Each event waits until the group "
              "is stable "
              f"(settle_before_events={c['settle_before_events']}) and until the previous worker event has "
              f"recovered (recover_before_events={c.get('recover_before_events')}): the embedded broker never "
              "evicts a group leader SIGKILLed during a rebalance. Recovery: from the signal until every input "
              "partition the victim held (its assigned/revoking log lines) has output from another process.", ""]
    for kill in report.get("broker_kills", []):
        lines += [(f"broker-kill: node {kill['node']} (the group coordinator; it led output partitions "
                   f"{kill['output_partitions_led']}) SIGKILLed at {kill['killed_s']} s, started again at "
                   f"{kill['restarted_s']} s. Its recovery: the longest any output partition went without a newly "
                   "readable record (read_committed), from the kill until the next event."), ""]
    return "\n".join(lines)
