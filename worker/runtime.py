"""The worker: a consumer-group member that drives the agent engine and commits its effects.

One asyncio loop owns everything Kafka-facing (consumer, producer, engine), so rebalance
callbacks, commits and actions never race. Partition restores run in threads.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Hashable

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from agentplan import Agent, AgentConfiguration, AgentPlan, AgentPlanError, Engine, KeyDelta
from agentplan.codec import resolve_path
from worker.commit import (AbortableCommitError, AtLeastOnceCommit, CommitProtocol, FatalCommitError,
                           TransactionalCommit)
from worker.committer import Committer
from worker.config import GroupProtocol, ProcessingGuarantee, WorkerSettings
from worker.exceptions import BrokerUnavailableError, BrokerUnreachableError, ConfigurationError, WorkerError
from worker.kafka.acls import AclCheck, authorization_error
from worker.kafka.admin import TopicAdmin, invalid_property_error
from worker.kafka.outage import BrokerWatch
from worker.kafka.properties import consumer_properties, producer_properties
from worker.kafka.retention import check_retention_gaps
from worker.observability.health import ObservabilityServer
from worker.observability.metrics import WorkerMetrics
from worker.offsets import OffsetTracker
from worker.records import DecodeFailure, InputDecoder, RecordMeta, dlq_headers, encode_output, source_headers
from worker.state.restore import restore_partition
from worker.state.store import PartitionStore, ensure_writable

logger = logging.getLogger(__name__)

IDLE_POLL_S = 0.002
LAG_REFRESH_S = 2.0
RESUME_FRACTION = 0.75
PAUSE_AFTER_FULL_S = 3.0
IDLE_COMMIT_GAP_S = 0.005
GC_GEN0_THRESHOLD = 10_000
SWITCH_INTERVAL_S = 0.0005
# One key may hold at most this share of the in-flight window. Its runs are sequential, so a hot key's
# backlog would otherwise fill the window and stop every other partition until it drains.
HOT_KEY_SHARE = 0.25
HEARTBEATS_PER_SESSION = 10
# How often a wait for the transaction in flight checks whether librdkafka keeps its close blocked,
# and how far past its own timeout commit_transaction may block (see _stuck_close).
STUCK_CHECK_S = 0.5
STUCK_MARGIN_S = 10.0


TopicPart = tuple[str, int]


@dataclass
class _Partition:
    topic: str
    number: int
    stateful: bool = True
    records_in: Any = None  # the partition's records-in counter child, looked up once
    store: PartitionStore | None = None
    ready: bool = False
    buffered: list[Message] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Transaction:
    """One commit's effects, from opening the transaction until it is settled."""

    name: str
    deltas: list[KeyDelta]
    dlq: list[tuple[RecordMeta, str, BaseException, bytes | None, bytes | None]]
    rekeyed: list[tuple[RecordMeta, bytes, bytes, Any]]
    offsets: dict[TopicPart, int]
    changelog_offsets: dict[int, int] = field(default_factory=dict)  # partition -> last changelog offset
    outputs: int = 0
    started: float = field(default_factory=time.monotonic)
    duration_s: float = 0.0


def tune_interpreter() -> None:
    """For a process that runs a worker: fewer, cheaper cyclic collections; prompt GIL hand-offs.

    Per record the engine allocates a few hundred short-lived objects; at the default gen-0
    threshold (700) the collector runs every few records and keeps re-scanning the long-lived
    plan, modules and clients. Freezing those and collecting gen 0 every GC_GEN0_THRESHOLD
    allocations took ~10-15% off the engine's CPU per record (measured). Reference counting still
    frees almost everything at once; only cycles wait a little longer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 10)
    # The committer thread needs the GIL back after each broker call; at the default 5 ms switch
    # interval a busy loop kept it waiting (S1 commits took 45 ms, 26 ms at this interval; measured).
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def heartbeat_interval_ms(settings: WorkerSettings) -> int:
    """A tenth of the session timeout in effect (a ``session.timeout.ms`` passed through wins).

    The other members learn that one died only at their next heartbeat after its session expired,
    and the rebalance waits for the last of them to rejoin: up to two heartbeat intervals after the
    session timeout. Heartbeats every 2 s (a fifth of the setting, while 6 s was passed through)
    made that up to 4 s of the 11 s S6 failover (measured on the wire).
    """
    raw = settings.kafka.get("session.timeout.ms", settings.session_timeout_ms)
    try:
        session_ms = int(raw)
    except (TypeError, ValueError):
        raise ConfigurationError("kafka.session.timeout.ms", f"{raw!r} is not a number of milliseconds") from None
    return max(100, session_ms // HEARTBEATS_PER_SESSION)


def load_agent(path: str) -> Agent:
    """``module:Class`` -> an Agent instance; errors name the setting."""
    try:
        target = resolve_path(path)
    except Exception as exc:
        raise ConfigurationError("agent", f"cannot import {path!r}: {exc}") from exc
    agent = target() if isinstance(target, type) else target
    if not isinstance(agent, Agent):
        raise ConfigurationError("agent", f"{path!r} is not an Agent subclass or instance")
    return agent


def compile_plan(agent: Agent, config: AgentConfiguration, resources: dict[str, str]) -> AgentPlan:
    """The agent plus environment resources given by import path; compile errors name the setting."""
    from agentplan.agent import infer_resource_type

    extra = {}
    for name, target in resources.items():
        try:
            value = resolve_path(target)
            extra[name] = (infer_resource_type(value), value)
        except Exception as exc:
            raise ConfigurationError("resource", f"{name}={target}: {exc}") from exc
    try:
        return AgentPlan.from_agent(agent, config, extra)
    except AgentPlanError as exc:
        raise ConfigurationError("agent", str(exc)) from exc


def load_model(path: str | None) -> type | None:
    if path is None:
        return None
    from pydantic import BaseModel

    try:
        model = resolve_path(path)
    except Exception as exc:
        raise ConfigurationError("input-model", f"cannot import {path!r}: {exc}") from exc
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise ConfigurationError("input-model", f"{path!r} is not a pydantic model class")
    return model


class Worker:
    """Runs one agent over ``settings.input_topic`` as a member of group ``settings.app_id``."""

    def __init__(self, settings: WorkerSettings, agent: Agent | None = None,
                 agent_config: AgentConfiguration | None = None, metrics: WorkerMetrics | None = None,
                 plan: AgentPlan | None = None) -> None:
        self.settings = settings
        self.agent = agent if agent is not None else load_agent(settings.agent)
        if agent_config is None:
            agent_config = AgentConfiguration.load(settings.agent_config)
        self.plan = plan or compile_plan(self.agent, agent_config, settings.resources)
        self.decoder = InputDecoder(load_model(settings.input_model), settings.max_record_bytes, settings.key_field)
        self.metrics = metrics or WorkerMetrics(app_id=settings.app_id, instance_id=settings.instance_id)
        self.tracker = OffsetTracker()
        self.partitions: dict[TopicPart, _Partition] = {}
        # (source, reason, error, original key, original value) awaiting the next transaction
        self._pending_dlq: list[tuple[RecordMeta, str, BaseException, bytes | None, bytes | None]] = []
        # (source, new key, value, headers) to re-key through the repartition topic
        self._pending_repartition: list[tuple[RecordMeta, bytes, bytes, Any]] = []
        self._retry: list[KeyDelta] = []
        self._stopping: asyncio.Event | None = None  # created inside the running loop
        self._paused = False
        self._last_consume = time.monotonic()  # when consume() last ran (it serves rebalance callbacks)
        self._hot_key_limit = max(1, int(settings.max_inflight * HOT_KEY_SHARE))
        self._key_backlog: dict[Hashable, int] = {}  # engine key -> submitted records not committed yet
        self._hot_partitions: dict[TopicPart, set[Hashable]] = {}  # paused while these keys' backlogs drain
        self._txn_seq = 0
        # Closes exactly-once transactions while the loop goes on; one at a time (see _commit).
        self._committer = Committer()
        self._in_flight: tuple[_Transaction, Future[AbortableCommitError | FatalCommitError | None]] | None = None
        self._txn_prefix = f"{settings.transactional_id}@{int(time.time() * 1000)}"
        self._last_commit = time.monotonic()
        self._last_lag = 0.0
        self._alive = True
        self._loop_round: float | None = None  # when the main loop last began a round; None outside it
        self._stall_reported = False
        self.metrics.event_loop_round_age_seconds.set_function(self.loop_round_age)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.engine: Engine | None = None
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self.protocol: CommitProtocol | None = None
        self.server: ObservabilityServer | None = None
        self.committed_transactions = 0
        self.broker = BrokerWatch(settings.bootstrap_servers, settings.broker_unreachable_timeout_s, self._probe_broker)
        self._fatal: WorkerError | None = None  # raised after the graceful shutdown it triggered

    # -- configuration of clients -----------------------------------------------------------------
    def _base_config(self) -> dict[str, Any]:
        # Nagle off (librdkafka leaves it on): small fetches and commits otherwise wait on delayed
        # ACKs, tens of ms per hop measured on the embedded broker. A user setting still wins.
        return {"bootstrap.servers": self.settings.bootstrap_servers, "socket.nagle.disable": True,
                **self.settings.kafka, "error_cb": self.broker.on_client_error}

    def _consumer_config(self) -> dict[str, Any]:
        classic = self.settings.group_protocol is GroupProtocol.CLASSIC
        # A classic member sets its own session (a passed-through session.timeout.ms wins). Under KIP-848
        # the broker owns session and heartbeats, and librdkafka refuses these properties.
        session = {"session.timeout.ms": self.settings.session_timeout_ms,
                   "heartbeat.interval.ms": heartbeat_interval_ms(self.settings)} if classic else {}
        # Both assign incrementally, so the rebalance callbacks only ever see the partitions that move;
        # under KIP-848 the broker computes the (always sticky) assignment.
        assignment = {"partition.assignment.strategy": "cooperative-sticky"} if classic else \
            {"group.protocol": GroupProtocol.CONSUMER.value}
        return {
            "fetch.wait.max.ms": 10,
            **session,
            **consumer_properties(self._base_config()),
            "group.id": self.settings.app_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            **assignment,
        }

    def _producer_config(self) -> dict[str, Any]:
        config = {"linger.ms": 5, **producer_properties(self._base_config()), "enable.idempotence": True}
        if self.settings.processing_guarantee is ProcessingGuarantee.EXACTLY_ONCE:
            config["transactional.id"] = self.settings.transactional_id
            config["transaction.timeout.ms"] = self.settings.transaction_timeout_ms
        return config

    # -- start-up checks ------------------------------------------------------------------------
    def check_topics(self) -> int:
        """Fail fast on an unreachable broker or missing topics; create changelog and DLQ topics."""
        s = self.settings
        admin = TopicAdmin(s.bootstrap_servers, dict(s.kafka), timeout_s=s.startup_timeout_s)
        try:
            admin.check_reachable()  # librdkafka keeps reconnecting with back-off until the deadline
        except BrokerUnavailableError as exc:
            raise BrokerUnavailableError(exc.setting, f"{exc.message} (the start-up deadline is "
                                                      "startup-timeout-s / AGENTFLEET_STARTUP_TIMEOUT_S)") from None
        # Before topics are looked up or created: a topic hidden by a missing ACL is not "missing".
        acls = AclCheck(admin.client, s, s.startup_timeout_s)
        acls.before_topics()
        partitions = admin.partitions(s.input_topic)
        if partitions is None:
            raise ConfigurationError("input-topic", f"topic {s.input_topic!r} does not exist")
        if admin.partitions(s.output_topic) is None:
            raise ConfigurationError("output-topic", f"topic {s.output_topic!r} does not exist")
        replicas = s.replication_factor
        changelog = admin.ensure_topic(s.changelog_topic, partitions, {"cleanup.policy": "compact"}, replicas)
        if changelog != partitions:
            raise ConfigurationError("app-id", f"changelog topic {s.changelog_topic!r} has {changelog} partitions "
                                               f"but {s.input_topic!r} has {partitions}; they must match")
        admin.ensure_topic(s.dead_letter_topic, partitions, replication_factor=replicas)
        if s.key_field:
            repartition = admin.ensure_topic(s.repartition_topic, partitions, replication_factor=replicas)
            if repartition != partitions:
                raise ConfigurationError("key-field", f"repartition topic {s.repartition_topic!r} has {repartition} "
                                                      f"partitions but {s.input_topic!r} has {partitions}")
        acls.after_topics()
        return partitions

    # -- entry points -------------------------------------------------------------------------------
    def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the process exit code."""
        tune_interpreter()
        try:
            asyncio.run(self.run_async())
        except WorkerError as exc:
            logger.error("%s", exc)
            return 2 if isinstance(exc, ConfigurationError) else 1
        return 0

    async def run_async(self, install_signal_handlers: bool = True) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        if install_signal_handlers:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self.stop)
        logger.info("settings: %s", self.settings.redacted_dump())
        ensure_writable(self.settings.state_dir / self.settings.app_id)
        await asyncio.to_thread(self.check_topics)
        self.engine = Engine(self.plan, state_loader=self._load_state, metrics=self.metrics)
        self.metrics.inflight_limit.set(self.settings.max_inflight)
        if self.settings.metrics_port >= 0:
            self.server = ObservabilityServer(self.metrics.registry, self.settings.metrics_host,
                                              self.settings.metrics_port, liveness=self._liveness,
                                              readiness=self._readiness).start()
            logger.info("metrics on http://%s:%d/metrics", self.settings.metrics_host, self.server.port)
        try:
            self.producer = Producer(self._producer_config())
            self.consumer = Consumer(self._consumer_config())
        except KafkaException as exc:  # a passed-through property librdkafka refuses for this client type
            raise invalid_property_error(exc) from None
        if self.settings.processing_guarantee is ProcessingGuarantee.EXACTLY_ONCE:
            protocol = TransactionalCommit(self.producer, self.consumer)
            try:
                await asyncio.to_thread(protocol.init)
            except FatalCommitError as exc:  # e.g. TRANSACTIONAL_ID_AUTHORIZATION_FAILED: name the ACL
                del protocol
                self._discard_unstarted_clients()
                raise authorization_error(exc, self.settings) or exc
            self.protocol = protocol
        else:
            self.protocol = AtLeastOnceCommit(self.producer, self.consumer)
        topics = [self.settings.input_topic]
        if self.settings.key_field:
            topics.append(self.settings.repartition_topic)
        self.consumer.subscribe(topics, on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_lost)
        logger.info("worker %s joined group %s on %s (%s)", self.settings.instance_id, self.settings.app_id,
                    self.settings.input_topic, self.settings.processing_guarantee.value)
        try:
            await self._main_loop()
            await self._shutdown()
            if self._fatal is not None:
                raise self._fatal
        finally:
            self._alive = False
            self._committer.shutdown()
            if self.server is not None:
                self.server.stop()

    def stop(self) -> None:
        """Begin a graceful shutdown (safe from signal handlers and other threads)."""
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)

    # -- the loop ------------------------------------------------------------------------------------
    async def _main_loop(self) -> None:
        assert self.consumer is not None and self._stopping is not None
        interval = self.settings.commit_interval_ms / 1000
        try:
            while not self._stopping.is_set():
                self._loop_round = time.monotonic()
                # Never take more than the in-flight budget allows, so the bound holds exactly. A full
                # window takes nothing: the records wait in the client's fetch queue (see _apply_backpressure).
                room = self.settings.max_inflight - self.tracker.pending
                messages: list[Message] = []
                if room > 0 or self._paused:
                    messages = self.consumer.consume(num_messages=max(1, min(500, room)), timeout=0)
                    self._last_consume = time.monotonic()
                for message in messages:
                    self._on_message(message)
                now = time.monotonic()
                committing = self._poll_commit()
                if self.broker.down:
                    self.broker.check()  # commits wait for the broker; raises past the deadline
                elif self.broker.take_recovery():
                    if self._in_flight is not None:
                        await asyncio.wrap_future(self._in_flight[1])
                        self._settle_commit_in_flight()
                    await asyncio.to_thread(self._renew_producer)
                elif not committing and (now - self._last_commit >= interval or self._window_full_of_finished_work()
                                         or (not messages and self._idle_with_finished_work(now))):
                    self._start_commit()
                    self._last_commit = now
                self._apply_backpressure()
                self.metrics.inflight_records.set(self.tracker.pending)
                if now - self._last_lag >= LAG_REFRESH_S:
                    self._refresh_gauges()
                    self._last_lag = now
                await asyncio.sleep(0 if messages else IDLE_POLL_S)
        finally:
            self._loop_round = None  # draining at shutdown is bounded by shutdown_grace_s instead

    def _discard_unstarted_clients(self) -> None:
        """Close the clients of a start that failed before the group was joined, and stop serving metrics.

        Left to the interpreter's exit, a consumer never closed and a producer in a fatal state were
        destroyed during finalisation, and the process died of SIGSEGV instead of exiting 2 (seen
        once in a full suite run, in the missing-transactional-id-ACL test).
        """
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None
        self.producer = None
        if self.server is not None:
            self.server.stop()
            self.server = None

    async def _shutdown(self) -> None:
        """Stop intake, let in-flight runs finish within the grace period, commit, leave."""
        assert self.consumer is not None and self.engine is not None and self.producer is not None
        logger.info("shutting down: draining %d in-flight records", self.tracker.pending)
        assigned = self.consumer.assignment()
        if assigned:
            self.consumer.pause(assigned)
        try:
            await asyncio.wait_for(self.engine.wait_idle(), timeout=self.settings.shutdown_grace_s)
        except asyncio.TimeoutError:
            logger.warning("grace period over; unfinished runs resume on the next owner from their journal")
        self._commit()
        for part in self.partitions.values():
            part.cancelled.set()
        self.consumer.close()  # leaves the group; on_revoke commits and closes stores
        self.producer.flush(10)
        for part in list(self.partitions.values()):
            self._close_partition(part)
        await self.engine.close()
        await self.plan.aclose()  # HTTP clients belong to this loop
        logger.info("worker %s stopped after %d transactions", self.settings.instance_id,
                    self.committed_transactions)

    # -- intake ----------------------------------------------------------------------------------
    def _on_message(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                return
            unauthorized = authorization_error(error, self.settings, message.topic())
            if unauthorized is not None:  # else retried forever: an ACL removed since start-up, or not checkable
                raise unauthorized
            if error.fatal():
                raise WorkerError(f"consumer error: {error}")
            logger.warning("consumer error: %s", error)
            return
        part = self.partitions.get((message.topic(), message.partition()))
        if part is None:
            return  # fetched before a revoke
        self.tracker.add((message.topic(), message.partition()), message.offset())
        part.records_in.inc()
        if not part.ready:
            part.buffered.append(message)
            return
        self._dispatch(message)

    def _dispatch(self, message: Message) -> None:
        assert self.engine is not None
        timestamp = message.timestamp()[1]
        raw_key = message.key()
        meta = RecordMeta(message.topic(), message.partition(), message.offset(), timestamp, raw_key or b"")
        repartition = self.settings.key_field is not None and meta.topic == self.settings.input_topic
        try:
            # Re-keyed records take their key from the field, whatever key they arrived with.
            key, value = self.decoder.decode(None if repartition else raw_key, message.value())
        except DecodeFailure as failure:
            self._pending_dlq.append((meta, failure.reason, failure, raw_key, message.value()))
            return
        meta.key = key
        if repartition:
            self._pending_repartition.append((meta, key, message.value(), message.headers()))
            return
        engine_key = (meta.partition, key)
        self.engine.submit(engine_key, value, position=meta.offset, meta=meta)
        backlog = self._key_backlog.get(engine_key, 0) + 1
        self._key_backlog[engine_key] = backlog
        if backlog >= self._hot_key_limit:
            self._pause_for_hot_key((meta.topic, meta.partition), engine_key)

    def _pause_for_hot_key(self, number: TopicPart, engine_key: Hashable) -> None:
        """Stop taking records from the hot key's partition; the other partitions keep the window."""
        assert self.consumer is not None
        keys = self._hot_partitions.setdefault(number, set())
        if not keys:
            self.consumer.pause([TopicPartition(*number)])
            logger.debug("key %r holds %d in-flight records: partition %s[%d] paused until they drain",
                         engine_key[1], self._key_backlog[engine_key], *number)  # type: ignore[index]
        keys.add(engine_key)

    def _release_backlog(self, deltas: list[KeyDelta]) -> None:
        """Committed records leave their keys' backlogs; resume partitions whose hot keys drained."""
        assert self.consumer is not None
        for delta in deltas:
            done = sum(1 for meta in delta.finished if meta is not None)
            if done:
                left = self._key_backlog.get(delta.key, 0) - done
                if left > 0:
                    self._key_backlog[delta.key] = left
                else:
                    self._key_backlog.pop(delta.key, None)
        resume_below = self._hot_key_limit * RESUME_FRACTION
        for number, keys in list(self._hot_partitions.items()):
            keys.difference_update([k for k in keys if self._key_backlog.get(k, 0) <= resume_below])
            if not keys:
                del self._hot_partitions[number]
                part = self.partitions.get(number)
                if not self._paused and part is not None and part.ready:
                    self.consumer.resume([TopicPartition(*number)])

    def _load_state(self, engine_key: Hashable) -> bytes | None:
        partition, key = engine_key  # type: ignore[misc]
        part = self.partitions.get((self.settings.state_topic, partition))
        if part is None or part.store is None:
            return None
        return part.store.get(key)

    def _apply_backpressure(self) -> None:
        """Pause intake only when a full window has kept consume() from running for PAUSE_AFTER_FULL_S.

        Pausing drops the client's prefetched records, and the fetch after resuming comes on the
        client's next broker wake-up, 0.5-1 s later (measured). While runs keep finishing, each
        commit frees room and consume() runs, so a full window just stops taking records. Only a
        stall (e.g. a model outage) pauses: consume() must keep serving rebalance callbacks.
        """
        assert self.consumer is not None
        pending = self.tracker.pending
        limit = self.settings.max_inflight
        now = time.monotonic()
        if not self._paused and pending >= limit and now - self._last_consume >= PAUSE_AFTER_FULL_S:
            assigned = self.consumer.assignment()
            if assigned:
                self.consumer.pause(assigned)
            self._paused = True
            self.metrics.paused_partitions.set(len(assigned))
            logger.debug("in-flight %d >= %d: paused intake", pending, limit)
        elif self._paused and pending <= limit * RESUME_FRACTION:
            self._resume_ready()
            self._paused = False
            logger.debug("in-flight %d: resumed intake", pending)
            self.metrics.paused_partitions.set(0)

    def _idle_with_finished_work(self, now: float) -> bool:
        """Nothing arrived and nothing runs, yet finished records wait for the commit.

        Committing at once takes end-to-end latency at low rates from half the commit interval
        down to the commit's own few milliseconds. Under load records keep arriving, so the
        interval still batches; the gap bounds commits of an idle worker with buffered records.
        """
        assert self.engine is not None
        return now - self._last_commit >= IDLE_COMMIT_GAP_S and self.tracker.pending > 0 and \
            self.engine.inflight_runs == 0 and self.engine.queued_inputs == 0

    def _window_full_of_finished_work(self) -> bool:
        """The in-flight window is full, partly of records only waiting for the commit.

        Committing them frees the window without pausing; a pause/resume cycle costs a fetch round
        trip (~0.9 s measured on the embedded broker).
        """
        assert self.engine is not None
        pending = self.tracker.pending
        return pending >= self.settings.max_inflight and \
            self.engine.inflight_runs + self.engine.queued_inputs < pending

    def _resume_ready(self) -> None:
        assert self.consumer is not None
        ready = [TopicPartition(topic, p) for (topic, p), part in self.partitions.items()
                 if part.ready and (topic, p) not in self._hot_partitions]
        if ready:
            self.consumer.resume(ready)

    # -- commit ----------------------------------------------------------------------------------
    # A commit is a small state machine: OPEN (collect finished effects, begin, produce them; on the
    # loop thread) -> CLOSE (flush, send offsets, commit; blocks on the broker for 4-18 ms) -> SETTLE
    # (on the loop thread: mark offsets, write stores, release keys, or re-queue after an abort).
    # The main loop closes exactly-once transactions in a thread so runs go on meanwhile; at most one
    # transaction is in flight, and everything else (rebalance callbacks, shutdown, producer renewal)
    # settles it first and then commits synchronously, so none of them ever interleaves with a commit.
    def _commit(self) -> None:
        """Commit every finished effect now and wait for it."""
        self._settle_commit_in_flight()
        txn = self._open_transaction()
        if txn is not None:
            self._settle(txn, self._close_transaction(txn))

    def _start_commit(self) -> None:
        """Open a transaction and close it in the committer thread; :meth:`_poll_commit` settles it."""
        if not self.protocol.transactional:  # type: ignore[union-attr]
            self._commit()  # at-least-once commits consumer offsets: keep the consumer on one thread
            return
        txn = self._open_transaction()
        if txn is not None:
            self._in_flight = (txn, self._committer.submit(self._close_transaction, txn))

    def _poll_commit(self) -> bool:
        """Settle the transaction in flight if the broker has answered (or its close is stuck); True while
        one is in flight."""
        if self._in_flight is not None and (self._in_flight[1].done() or self._stuck_close() is not None):
            self._settle_commit_in_flight()
        return self._in_flight is not None

    def _settle_commit_in_flight(self) -> None:
        if self._in_flight is not None:
            txn, closing = self._in_flight
            self._in_flight = None
            self._settle(txn, self._close_outcome(closing))

    def _close_outcome(self, closing: Future[AbortableCommitError | FatalCommitError | None]
                       ) -> AbortableCommitError | FatalCommitError | None:
        """Wait for the close in flight to finish; cut it loose once it is stuck (see _stuck_close)."""
        while True:
            try:
                return closing.result(timeout=STUCK_CHECK_S)
            except FutureTimeout:
                stuck = self._stuck_close()
                if stuck is not None:
                    return self._abandon_close(stuck)

    def _stuck_close(self) -> str | None:
        """The transactional call that has blocked the committer past any legitimate wait, if one has.

        librdkafka 2.16 can block send_offsets_to_transaction for good once the broker of the group
        coordinator fails: the dead coordinator stays cached, and the call's timeout is not enforced
        (confluentinc/librdkafka#5511, #5456). Measured on a 3-node cluster: every worker stopped
        committing when that node was SIGKILLed, and stayed stopped after it came back. Before EndTxn
        is sent, a transaction older than transaction.timeout.ms cannot commit any more (the
        coordinator aborts it), so that is the limit; commit_transaction gets its own timeout and a margin.
        """
        protocol = self.protocol
        blocked = protocol.blocked_in if isinstance(protocol, TransactionalCommit) else None
        if blocked is None:
            return None
        call, since = blocked
        limit = (protocol.timeout_s + STUCK_MARGIN_S if call == "commit_transaction"  # type: ignore[union-attr]
                 else self.settings.transaction_timeout_ms / 1000)
        return call if time.monotonic() - since > limit else None

    def _abandon_close(self, call: str) -> AbortableCommitError | FatalCommitError:
        """Give up on a stuck close: fence its producer and retry the batch, or exit when the outcome is unknown."""
        if call == "commit_transaction":
            # EndTxn may have reached the coordinator: the transaction may be committed, so a retry could
            # commit the batch twice. A restarted worker resumes from whatever was committed.
            return FatalCommitError("commit_transaction stayed blocked past its timeout; exiting")
        logger.error("%s has blocked the committer for over %gs (librdkafka keeps a failed group coordinator "
                     "cached: confluentinc/librdkafka#5511); fencing that producer with a fresh one and retrying "
                     "the batch", call, self.settings.transaction_timeout_ms / 1000)
        self._committer.shutdown()  # its thread stays blocked in librdkafka, with the fenced producer
        self._committer = Committer()
        # init_transactions under the same transactional.id aborts the stuck transaction: it cannot commit.
        self._renew_producer()
        return AbortableCommitError(f"{call} blocked past transaction.timeout.ms; the transaction was fenced", call)

    def _open_transaction(self) -> _Transaction | None:
        """Begin a transaction holding every finished effect; None when there is nothing to commit."""
        assert self.engine is not None and self.protocol is not None
        deltas = self._retry + self.engine.collect()
        self._retry = []
        dlq = self._pending_dlq
        self._pending_dlq = []
        rekeyed = self._pending_repartition
        self._pending_repartition = []
        for delta in deltas:
            for meta in delta.finished:
                if meta is not None:
                    self.tracker.finish((meta.topic, meta.partition), meta.offset)
        for meta, *_ in dlq + rekeyed:
            self.tracker.finish((meta.topic, meta.partition), meta.offset)
        offsets = self.tracker.changed()
        if not deltas and not dlq and not rekeyed and not offsets:
            return None
        s = self.settings
        self._txn_seq += 1
        txn = _Transaction(f"{self._txn_prefix}#{self._txn_seq}", deltas, dlq, rekeyed, offsets)
        changelog_offsets = txn.changelog_offsets

        def delivered(err: Any, msg: Message) -> None:  # runs inside the protocol's flush()
            if err is None:
                p = msg.partition()
                changelog_offsets[p] = max(changelog_offsets.get(p, -1), msg.offset())

        # The store records the changelog offset it is in step with: the last of each partition's
        # records in this transaction (the idempotent producer keeps their order), so only that one
        # needs a delivery report; a report per record cost a GIL round trip each.
        last_of_partition = {delta.key[0]: i for i, delta in enumerate(deltas)}  # type: ignore[index]
        produce = self.protocol.produce
        try:
            self.protocol.begin()
            for i, delta in enumerate(deltas):
                partition, key = delta.key  # type: ignore[misc]
                for meta, output in delta.outputs:
                    produce(s.output_topic, encode_output(output), key=key,
                            headers=source_headers(meta, s.app_id, txn.name))
                    txn.outputs += 1
                for meta, value, error in delta.failures:
                    produce(s.dead_letter_topic, encode_output(value), key=key,
                            headers=dlq_headers(meta, s.app_id, txn.name, "run-failed", error))
                produce(s.changelog_topic, delta.state, key=key, partition=partition,
                        on_delivery=delivered if last_of_partition[partition] == i else None)
            for meta, reason, error, raw_key, raw_value in dlq:
                produce(s.dead_letter_topic, raw_value, key=raw_key,
                        headers=dlq_headers(meta, s.app_id, txn.name, reason, error))
            for _meta, key, value, headers in rekeyed:
                produce(s.repartition_topic, value, key=key, headers=headers)
        except (AbortableCommitError, FatalCommitError) as exc:
            self._settle(txn, exc)
            return None
        return txn

    def _close_transaction(self, txn: _Transaction) -> AbortableCommitError | FatalCommitError | None:
        """Wait for the broker to commit ``txn`` (any thread); the outcome is settled on the loop."""
        assert self.protocol is not None
        try:
            self.protocol.commit(txn.offsets)
        except (AbortableCommitError, FatalCommitError) as exc:
            return exc
        txn.duration_s = time.monotonic() - txn.started
        return None

    def _settle(self, txn: _Transaction, error: AbortableCommitError | FatalCommitError | None) -> None:
        assert self.engine is not None and self.protocol is not None
        s = self.settings
        m = self.metrics
        if isinstance(error, AbortableCommitError):
            logger.warning("transaction %s aborted, retrying its batch: %s", txn.name, error)
            m.transactions_aborted_total.inc()
            self._abort(error)
            self._retry = txn.deltas + self._retry
            self._pending_dlq = txn.dlq + self._pending_dlq
            self._pending_repartition = txn.rekeyed + self._pending_repartition
            return
        if error is not None:
            m.transactions_aborted_total.inc()
            if self.broker.down:
                raise BrokerUnreachableError(f"Kafka at {s.bootstrap_servers} became unreachable during transaction "
                                             f"{txn.name}, which cannot complete: {error}. Exiting; a restarted "
                                             "worker resumes from the last committed transaction") from error
            raise error
        self.tracker.mark_committed(txn.offsets)
        self._apply_to_stores(txn.deltas, txn.changelog_offsets)
        self.engine.release(txn.deltas)
        self._release_backlog(txn.deltas)
        self.committed_transactions += 1
        now_ms = time.time() * 1000
        m.transactions_committed_total.inc()
        m.commit_duration_seconds.observe(txn.duration_s)
        m.last_commit_timestamp_seconds.set(now_ms / 1000)
        if txn.outputs:
            m.records_out_total.labels(s.output_topic).inc(txn.outputs)
        for _meta, reason, *_rest in txn.dlq:
            m.dlq_records_total.labels(reason).inc()
        e2e = m.end_to_end_latency_seconds
        for delta in txn.deltas:
            if delta.failures:
                m.dlq_records_total.labels("run-failed").inc(len(delta.failures))
            if delta.skipped:
                m.records_skipped_total.labels("already-finished").inc(len(delta.skipped))
            for meta in delta.finished:
                if meta is not None and meta.timestamp_ms > 0:
                    e2e.observe(max(0.0, (now_ms - meta.timestamp_ms) / 1000))
        logger.debug("committed %s in %.3fs: %d keys, %d outputs, %d dlq, offsets %s", txn.name, txn.duration_s,
                     len(txn.deltas), txn.outputs, len(txn.dlq), txn.offsets)

    def _abort(self, error: AbortableCommitError) -> None:
        """Abort the failed transaction; if the abort fails fatally, fence the transaction instead.

        A transaction that failed before commit_transaction cannot have committed, so a fresh producer
        (whose init_transactions aborts it) lets the batch be retried without exiting. Measured on a
        3-node cluster under load: records timed out while a node restarted, then abort_transaction
        failed with INVALID_TXN_STATE, a fatal error that leaves the producer unusable.
        """
        assert self.protocol is not None
        try:
            self.protocol.abort()
        except FatalCommitError:
            if error.call == "commit_transaction":
                raise  # the transaction may have committed: only a restart resumes from what is certain
            logger.warning("aborting the failed transaction failed too; fencing it with a fresh producer",
                           exc_info=True)
            self._renew_producer()

    def _apply_to_stores(self, deltas: list[KeyDelta], changelog_offsets: dict[int, int]) -> None:
        by_partition: dict[int, dict[bytes, bytes | None]] = {}
        for delta in deltas:
            partition, key = delta.key  # type: ignore[misc]
            by_partition.setdefault(partition, {})[key] = delta.state
        for partition, states in by_partition.items():
            part = self.partitions.get((self.settings.state_topic, partition))
            if part is None or part.store is None or partition not in changelog_offsets:
                continue
            part.store.apply(states, changelog_offsets[partition])

    # -- rebalancing ---------------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances_total.labels("assigned").inc()
        if not partitions:
            return
        stateful = [tp for tp in partitions if tp.topic == self.settings.state_topic]
        if stateful:
            consumer.pause(stateful)  # resumed once each partition's state is restored
        for tp in partitions:
            part = _Partition(tp.topic, tp.partition, stateful=tp.topic == self.settings.state_topic,
                              records_in=self.metrics.records_in_total.labels(tp.topic, str(tp.partition)))
            self.partitions[(tp.topic, tp.partition)] = part
            if part.stateful:
                assert self._loop is not None
                self._loop.create_task(self._restore(part))
            else:
                part.ready = True  # re-keying needs no state
        self.metrics.assigned_partitions.set(len(self.partitions))
        logger.info("assigned %s", [f"{tp.topic}[{tp.partition}]" for tp in partitions])
        # Records deleted before this group read them: logged and counted (librdkafka only skips them).
        check_retention_gaps({**consumer_properties(self._base_config()), "group.id": self.settings.app_id},
                             partitions, self.metrics)

    async def _restore(self, part: _Partition) -> None:
        s = self.settings
        path = s.state_dir / s.app_id / str(part.number)
        restore_config = {**consumer_properties(self._base_config()), "group.id": f"{s.app_id}-restore",
                          "fetch.wait.max.ms": 10}
        self.metrics.restoring_partitions.inc()
        try:
            result = await asyncio.to_thread(restore_partition, path, s.changelog_topic, part.number,
                                             restore_config, 600.0, part.cancelled)
        except Exception as exc:
            logger.exception("restore of partition %d failed", part.number)
            self._fatal = exc if isinstance(exc, WorkerError) else WorkerError(
                f"restore of partition {part.number} failed: {exc}")
            self._alive = False
            if self._stopping is not None:
                self._stopping.set()
            return
        finally:
            self.metrics.restoring_partitions.dec()
        if self.partitions.get((part.topic, part.number)) is not part or part.cancelled.is_set():
            result.store.close()  # revoked while restoring
            return
        part.store = result.store
        part.ready = True
        self.metrics.restore_records_total.inc(result.records)
        self.metrics.restore_duration_seconds.observe(result.seconds)
        logger.info("partition %d ready: restored %d changelog records in %.2fs%s", part.number, result.records,
                    result.seconds, " (store rebuilt)" if result.rebuilt else "")
        buffered, part.buffered = part.buffered, []
        for message in buffered:
            self._dispatch(message)
        if not self._paused and self.consumer is not None and (part.topic, part.number) not in self._hot_partitions:
            self.consumer.resume([TopicPartition(part.topic, part.number)])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances_total.labels("revoked").inc()
        numbers = {(tp.topic, tp.partition) for tp in partitions}
        logger.info("revoking %s", sorted(numbers))
        try:
            self._commit()  # hand over everything that finished
        except FatalCommitError:
            logger.exception("final commit before revocation failed")
        self._drop_partitions(numbers)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances_total.labels("lost").inc()
        numbers = {(tp.topic, tp.partition) for tp in partitions}
        logger.warning("lost %s; their uncommitted work is dropped", sorted(numbers))
        try:
            self._settle_commit_in_flight()  # callbacks never interleave with a commit
        except FatalCommitError:
            logger.exception("the transaction in flight when partitions were lost failed")
        self._drop_partitions(numbers)

    def _drop_partitions(self, numbers: set[TopicPart]) -> None:
        assert self.engine is not None
        state_parts = {p for topic, p in numbers if topic == self.settings.state_topic}
        self._key_backlog = {key: n for key, n in self._key_backlog.items()
                             if key[0] not in state_parts}  # type: ignore[index]
        self.engine.cancel_keys(lambda key: key[0] in state_parts)  # type: ignore[index]
        self._retry = [d for d in self._retry if d.key[0] not in state_parts]  # type: ignore[index]
        self._pending_dlq = [e for e in self._pending_dlq if (e[0].topic, e[0].partition) not in numbers]
        self._pending_repartition = [e for e in self._pending_repartition
                                     if (e[0].topic, e[0].partition) not in numbers]
        for number in numbers:
            self.tracker.drop(number)
            self._hot_partitions.pop(number, None)
            part = self.partitions.pop(number, None)
            if part is not None:
                part.cancelled.set()
                self._close_partition(part)
        self.metrics.assigned_partitions.set(len(self.partitions))

    def _close_partition(self, part: _Partition) -> None:
        if part.store is not None:
            part.store.close()
            part.store = None

    def _renew_producer(self) -> None:
        """After an outage or a stuck close, replace the transactional producer with a fresh one (same
        transactional.id).

        When every broker was down, librdkafka 2.16 re-bootstraps and can keep a decommissioned
        group coordinator cached, so the next send_offsets_to_transaction hangs until its timeout
        (confluentinc/librdkafka#5511, measured here on the embedded broker). The new producer's
        init_transactions fences the old one and aborts its open transaction, if any (commits are
        held during an outage; a stuck close is abandoned before EndTxn, see _stuck_close).
        """
        if not isinstance(self.protocol, TransactionalCommit):
            return
        logger.info("starting a fresh transactional producer")
        producer = Producer(self._producer_config())
        protocol = TransactionalCommit(producer, self.protocol.consumer)
        protocol.init()
        self.producer, self.protocol = producer, protocol

    def _probe_broker(self) -> None:
        """Raises unless a broker answers a metadata request (runs in a thread while Kafka is down)."""
        assert self.producer is not None
        self.producer.list_topics(timeout=2.0)

    # -- observability -----------------------------------------------------------------------------
    def _liveness(self) -> bool:
        """Alive, and the event loop completes rounds (called by the observability thread).

        A loop stuck past ``loop_stall_timeout_s`` (a rebalance callback that never returns, an action
        blocking the loop) would otherwise look healthy while the group waits on it forever. The default
        outlasts the longest legitimate stall: a commit's three broker calls at their time-outs plus a
        producer renewal.
        """
        if not self._alive:
            return False
        age = self.loop_round_age()
        stalled = age > self.settings.loop_stall_timeout_s
        if stalled != self._stall_reported:
            self._stall_reported = stalled
            if stalled:
                logger.error("the event loop has not completed a round for %.0fs (loop_stall_timeout_s=%g): "
                             "/healthz now fails", age, self.settings.loop_stall_timeout_s)
            else:
                logger.warning("the event loop completes rounds again: /healthz passes")
        return not stalled

    def loop_round_age(self) -> float:
        """Seconds since the main loop began its current round; 0 outside the main loop."""
        stamp = self._loop_round
        return 0.0 if stamp is None else max(0.0, time.monotonic() - stamp)

    def _readiness(self) -> tuple[bool, dict[str, Any]]:
        restoring = sum(1 for p in self.partitions.values() if not p.ready)
        return (self._alive and restoring == 0 and self.consumer is not None,
                {"assigned_partitions": len(self.partitions), "restoring_partitions": restoring})

    def _refresh_gauges(self) -> None:
        assert self.engine is not None and self.consumer is not None
        m = self.metrics
        m.inflight_records.set(self.tracker.pending)
        m.key_queue_depth.set(self.engine.queued_inputs)
        m.active_keys.set(self.engine.active_keys)
        for topic, partition in list(self.partitions):
            try:
                _low, high = self.consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            except Exception:  # noqa: BLE001 - lag is best effort
                continue
            committed = self.tracker.committable((topic, partition))
            if high is not None and high >= 0 and committed is not None:
                m.consumer_lag.labels(topic, str(partition)).set(max(0, high - committed))
