"""The worker: a consumer-group member that feeds the agent engine and checkpoints its effects.

One asyncio loop owns everything Kafka-facing (consumer, producer, engine), so rebalance callbacks,
checkpoints and actions never race. Where each guarantee lives:
  exactly-once commit ............ worker/checkpoint/ (the checkpoint's state table and its settling)
  store never ahead of changelog . worker/state/transaction.py
  bounded in-flight window ....... worker/offsets.py (what is counted), worker/processing/window.py
  pausing, hot keys .............. worker/processing/
  hand-over on rebalance ......... worker/rebalance.py
  liveness ....................... worker/observability/liveness.py
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Hashable
from typing import cast

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from agentplan import Agent, AgentConfiguration, AgentPlan, Engine
from agentplan.endpoints import model_endpoints
from agentplan.runtime.state_ttl import ShortTermMemoryTtl
from worker import event_loop
from worker.approvals import DecisionReader
from worker.checkpoint.checkpoint import Checkpoint, DeadLetter, Rekeyed, Topics
from worker.checkpoint.checkpointer import Checkpointer
from worker.checkpoint.producer import (
    AtLeastOnceProducer,
    CheckpointProducer,
    FatalCommitError,
    TransactionalProducer,
)
from worker.config import ProcessingGuarantee, WorkerSettings
from worker.exceptions import ConfigurationError, WorkerError
from worker.interpreter import tune_interpreter
from worker.kafka.acls import authorization_error
from worker.kafka.admin import invalid_property_error
from worker.kafka.clients import ClientConfigs
from worker.kafka.outage import BrokerWatch
from worker.kafka.topology import prepare_topics
from worker.observability.checkpoints import CheckpointObserver
from worker.observability.gauges import refresh_gauges
from worker.observability.health import ObservabilityServer, model_endpoints_readiness
from worker.observability.liveness import LoopLiveness
from worker.observability.metrics import WorkerMetrics
from worker.observability.tracing import WorkerObservation
from worker.observability.user_metrics import UserMetricsCollector
from worker.offsets import OffsetTracker
from worker.plugins import compile_plan, load_agent, load_agent_config, load_model
from worker.processing.cadence import Cadence
from worker.processing.hot_keys import HotKeys
from worker.processing.pausing import PauseReason, PausingManager
from worker.processing.window import InFlightWindow
from worker.rebalance import Rebalancer
from worker.records import (
    DecodeFailure,
    EngineKey,
    InputDecoder,
    RecordMeta,
    describe_key,
    position,
    trace_context,
    user_key,
)
from worker.state.expiry import StateExpiry
from worker.state.store import ensure_writable

__all__ = ["Worker"]

logger = logging.getLogger(__name__)

LAG_REFRESH_S = 2.0


class Worker:
    """Runs one agent over ``settings.input_topic`` as a member of group ``settings.app_id``."""

    def __init__(self, settings: WorkerSettings, agent: Agent | None = None,
                 agent_config: AgentConfiguration | None = None, metrics: WorkerMetrics | None = None,
                 plan: AgentPlan | None = None) -> None:
        self.settings = settings
        self.agent = agent if agent is not None else load_agent(settings.agent)
        if agent_config is None:
            agent_config = load_agent_config(settings.agent_config)
        self.plan = plan or compile_plan(self.agent, agent_config, settings.resources)
        self.observation = WorkerObservation(self.plan.config, type(self.agent).__name__, settings.app_id)
        self.decoder = InputDecoder(load_model(settings.input_model), settings.max_record_bytes, settings.key_field)
        self.metrics = metrics or WorkerMetrics(app_id=settings.app_id, instance_id=settings.instance_id)
        self.broker = BrokerWatch(settings.bootstrap_servers, settings.broker_unreachable_timeout_s, self._probe_broker)
        self.clients = ClientConfigs(settings, error_cb=self.broker.on_client_error)
        self.tracker = OffsetTracker()
        self.liveness = LoopLiveness(settings.loop_stall_timeout_s)
        self.metrics.event_loop_round_age_seconds.set_function(self.liveness.round_age)
        self._stopping: asyncio.Event | None = None  # created inside the running loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cadence: Cadence | None = None  # when the main loop runs its next round (needs the loop)
        self._last_commit = time.monotonic()
        self._last_lag = 0.0
        self._fatal: WorkerError | None = None  # raised after the graceful shutdown it triggered
        self.server: ObservabilityServer | None = None
        self.engine: Engine | None = None
        self.consumer: Consumer | None = None
        self.checkpointer: Checkpointer | None = None
        self.observer = CheckpointObserver(self.metrics, settings.output_topic, settings.dead_letter_topic)
        self.pausing: PausingManager | None = None
        self.hot_keys: HotKeys | None = None
        self.rebalancer: Rebalancer | None = None
        self.expiry: StateExpiry | None = None
        self.decisions: DecisionReader | None = None

    # -- entry points -------------------------------------------------------------------------------
    def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the process exit code.

        A :class:`ConfigurationError` (found at start-up, before any side effect) propagates, for the
        caller to show as one line (the CLI prints ``error: <setting>: ...`` and exits 2).
        """
        loop = event_loop.resolve(self.settings.event_loop)  # uvloop asked for and missing fails here
        logger.info("event loop: %s", loop.value)
        tune_interpreter()
        try:
            event_loop.run(self.run_async(), loop)
        except ConfigurationError:
            raise
        except WorkerError as exc:
            logger.error("%s", exc)
            return 1
        return 0

    def stop(self) -> None:
        """Begin a graceful shutdown (safe from signal handlers and other threads)."""
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stop_now)

    def _stop_now(self) -> None:
        assert self._stopping is not None
        self._stopping.set()
        if self._cadence is not None:
            self._cadence.wake()

    async def run_async(self, install_signal_handlers: bool = True) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._cadence = Cadence(self._loop)
        if install_signal_handlers:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self.stop)
        logger.info("settings: %s", self.settings.redacted_dump())
        try:
            await self._start()
            await self._main_loop()
            await self._shutdown()
            if self._fatal is not None:
                raise self._fatal
        finally:
            self.liveness.alive = False
            if self.checkpointer is not None:
                self.checkpointer.shutdown()
            if self.server is not None:
                self.server.stop()
            self.observation.shutdown()

    # -- start-up: every check that can fail runs before the first side effect on Kafka --------------
    async def _start(self) -> None:
        s = self.settings
        self._serve_metrics()  # a port in use fails here, before topics or state folders are created
        producer = self._make_clients()  # a property librdkafka refuses fails here; clients only connect
        try:
            ensure_writable(s.state_dir / s.app_id)
            partition_count = await asyncio.to_thread(prepare_topics, s, self.observation.event_log)
            observation = self.observation.start()
        except BaseException:
            self._discard_unstarted_consumer()
            raise
        self.engine = Engine(self.plan, state_loader=self._load_state, metrics=self.metrics,
                             describe_key=describe_key, observation=observation, user_key=user_key,
                             commits_state=True, on_input_finished=self._input_finished)
        self.metrics.inflight_limit.set(s.max_inflight)
        self.metrics.registry.register(UserMetricsCollector(self.engine.metric_group))
        ttl = ShortTermMemoryTtl.from_config(self.plan.config)
        if ttl is not None:
            self.expiry = StateExpiry(ttl, self.engine, self._replay_bound)
        if isinstance(producer, TransactionalProducer):
            try:
                await asyncio.to_thread(producer.init)
            except FatalCommitError as exc:  # e.g. TRANSACTIONAL_ID_AUTHORIZATION_FAILED: name the ACL
                del producer
                self._discard_unstarted_consumer()
                raise (authorization_error(exc, s) or exc) from None
        assert self.consumer is not None
        self.pausing = PausingManager(self.consumer, self.metrics.paused_partitions)
        self.hot_keys = HotKeys(s.max_inflight, self.pausing)
        self.checkpointer = Checkpointer(
            producer, self.engine, self.tracker,
            Topics(s.app_id, s.output_topic, s.dead_letter_topic, s.changelog_topic, s.repartition_topic,
                   s.events_topic if self.observation.event_log else None,
                   s.approvals_topic if s.approvals else ""),
            stores=lambda: self.rebalancer.stores() if self.rebalancer else {},
            name_prefix=f"{s.transactional_id}@{int(time.time() * 1000)}",
            transaction_timeout_s=s.transaction_timeout_ms / 1000, broker_down=lambda: self.broker.down,
            on_committed=self._committed, on_aborted=self.observer.aborted, bootstrap_servers=s.bootstrap_servers,
            on_closed=self._cadence.wake_threadsafe if self._cadence is not None else lambda: None)
        self.rebalancer = Rebalancer(s, self.clients, self.metrics, self.engine, self.tracker, self.pausing,
                                     self.hot_keys, self.checkpointer, dispatch=self._dispatch, fail=self._fail)
        if s.approvals:
            self.decisions = DecisionReader(s, self.clients.decisions_consumer(), self.clients.offsets_reader(),
                                            self.engine, self.tracker, self.checkpointer.dead_letter)
            self.rebalancer.on_drop.append(self.decisions.drop)
        topics = [s.input_topic, *([s.repartition_topic] if s.key_field else [])]
        r = self.rebalancer
        r.partition_count = partition_count
        self.consumer.subscribe(topics, on_assign=r.on_assign, on_revoke=r.on_revoke, on_lost=r.on_lost)
        logger.info("worker %s joined group %s on %s (%s)", s.instance_id, s.app_id, s.input_topic,
                    s.processing_guarantee.value)

    def _serve_metrics(self) -> None:
        s = self.settings
        if s.metrics_port < 0:
            return
        server = ObservabilityServer(self.metrics.registry, s.metrics_host, s.metrics_port,
                                     liveness=self.liveness.check, readiness=self._readiness)
        try:
            self.server = server.start()
        except OSError as exc:
            raise ConfigurationError("metrics-port", f"cannot listen on {s.metrics_host}:{s.metrics_port}: "
                                                     f"{exc.strerror or exc} (each worker on a host needs its own "
                                                     "--metrics-port; 0 picks a free one, -1 serves none)") from None
        logger.info("metrics on http://%s:%d/metrics", s.metrics_host, self.server.port)

    def _make_clients(self) -> CheckpointProducer:
        """The consumer, and the producer checkpoints go through."""
        try:
            self.consumer = Consumer(self.clients.consumer())
            make = lambda: Producer(self.clients.producer())  # noqa: E731 - also used to renew the producer
            if self.settings.processing_guarantee is ProcessingGuarantee.EXACTLY_ONCE:
                return TransactionalProducer(make, self.consumer)
            return AtLeastOnceProducer(make, self.consumer)
        except KafkaException as exc:  # a passed-through property librdkafka refuses for this client type
            self._discard_unstarted_consumer()
            raise invalid_property_error(exc) from None

    def _discard_unstarted_consumer(self) -> None:
        """Close the consumer of a start that failed before the group was joined.

        Left to the interpreter's exit, a consumer never closed and a producer in a fatal state were
        destroyed during finalisation, and the process died of SIGSEGV instead of exiting 2 (seen once
        in a full suite run, in the missing-transactional-id-ACL test).
        """
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None

    # -- the loop ------------------------------------------------------------------------------------
    async def _main_loop(self) -> None:
        assert self.consumer is not None and self._stopping is not None and self.checkpointer is not None
        assert self.engine is not None and self.pausing is not None and self._cadence is not None
        checkpointer, cadence = self.checkpointer, self._cadence
        window = InFlightWindow(self.settings.max_inflight, self.tracker, self.engine, self.pausing,
                                collected_uncommitted=lambda: checkpointer.collected_uncommitted)
        interval = self.settings.commit_interval_ms / 1000
        # Read when scraped, not set every round (a round's own cost is the worker's idle CPU).
        self.metrics.inflight_records.set_function(lambda: self.tracker.unfinished)
        self.metrics.uncommitted_records.set_function(window.uncommitted)
        try:
            while not self._stopping.is_set():
                self.liveness.begin_round()
                room = window.room()
                messages: list[Message] = self.consumer.consume(num_messages=room, timeout=0) if room else []
                for message in messages:
                    self._on_message(message)
                if self.decisions is not None:
                    assert self.rebalancer is not None
                    self.decisions.sync(self.rebalancer.ready_state_partitions())
                    self.decisions.poll()
                now = time.monotonic()
                committing = checkpointer.poll()
                if self.broker.down:
                    self.broker.check()  # commits wait for the broker; raises past the deadline
                elif self.broker.take_recovery() or checkpointer.renewal_requested:
                    checkpointer.request_renewal()
                    await checkpointer.wait_in_flight()
                    checkpointer.settle_in_flight()  # fencing a stuck close renews the producer already
                    if checkpointer.renewal_requested:
                        await asyncio.to_thread(checkpointer.renew_producer)
                elif not committing and (now - self._last_commit >= interval
                                         or window.commit_early(now, self._last_commit, bool(messages))):
                    checkpointer.start()
                    self._last_commit = now
                if self.expiry is not None and self.rebalancer is not None:
                    self.expiry.maybe_sweep(now, self.rebalancer.stores())
                window.apply_backpressure()
                if now - self._last_lag >= LAG_REFRESH_S:
                    assert self.rebalancer is not None
                    refresh_gauges(self.metrics, self.tracker, self.engine, self.consumer, self.rebalancer.partitions)
                    self.observer.report_dead_letters()
                    self._last_lag = now
                next_commit_s = interval if checkpointer.in_flight else self._last_commit + interval - now
                await cadence.pause(len(messages), room, room == 0, next_commit_s)
        finally:
            self.liveness.leave_loop()  # draining at shutdown is bounded by shutdown_grace_s instead

    async def _shutdown(self) -> None:
        """Stop intake, let in-flight runs finish within the grace period, commit, leave."""
        assert self.consumer is not None and self.engine is not None and self.checkpointer is not None
        assert self.pausing is not None and self.rebalancer is not None
        logger.info("shutting down: draining %d in-flight records", self.tracker.unfinished)
        self.pausing.pause_all(PauseReason.SHUTDOWN)
        try:
            await asyncio.wait_for(self.engine.wait_quiet(), timeout=self.settings.shutdown_grace_s)
        except asyncio.TimeoutError:
            logger.warning("grace period over; unfinished runs resume on the next owner from their journal")
        self.checkpointer.commit()
        for part in self.rebalancer.partitions.values():
            part.cancelled.set()
        self.consumer.close()  # leaves the group; on_revoke commits and closes stores
        self.checkpointer.producer.close(10)
        self.rebalancer.close_all()
        if self.decisions is not None:
            self.decisions.close()
        self.observer.report_dead_letters(force=True)
        await self.engine.close()
        await self.plan.aclose()  # HTTP clients belong to this loop
        logger.info("worker %s stopped after %d transactions", self.settings.instance_id,
                    self.checkpointer.committed)

    def _fail(self, error: WorkerError) -> None:
        """Stop gracefully, then exit with ``error`` (a restore failed)."""
        self._fatal = error
        self.liveness.alive = False
        if self._stopping is not None:
            self._stop_now()

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
        assert self.rebalancer is not None
        topic, partition, offset = position(message)
        part = self.rebalancer.partitions.get((topic, partition))
        if part is None:
            return  # fetched before a revoke
        self.tracker.add((topic, partition), offset)
        part.records_in.inc()
        if not part.ready:
            part.buffered.append(message)
            return
        self._dispatch(message)

    def _dispatch(self, message: Message) -> None:
        assert self.engine is not None and self.checkpointer is not None and self.hot_keys is not None
        raw_key = message.key()
        meta = RecordMeta(*position(message), message.timestamp()[1], raw_key or b"")
        headers = message.headers()
        if headers:
            meta.traceparent, meta.tracestate = trace_context(headers)
        repartition = self.settings.key_field is not None and meta.topic == self.settings.input_topic
        try:
            # Re-keyed records take their key from the field, whatever key they arrived with.
            key, value = self.decoder.decode(None if repartition else raw_key, message.value())
        except DecodeFailure as failure:
            self.checkpointer.dead_letter(DeadLetter(meta, failure.reason, failure, raw_key, message.value()))
            self.tracker.ran((meta.topic, meta.partition), meta.offset)
            return
        meta.key = key
        if repartition:
            self.checkpointer.rekey(Rekeyed(meta, key, message.value(), message.headers()))
            self.tracker.ran((meta.topic, meta.partition), meta.offset)
            return
        engine_key = (meta.partition, key)
        self.engine.submit(engine_key, value, position=meta.offset, meta=meta)
        self.hot_keys.submitted((meta.topic, meta.partition), engine_key)

    def _input_finished(self, meta: RecordMeta | None) -> None:
        """The engine is done with a record: its in-flight slot is free before its checkpoint."""
        if meta is not None:
            self.tracker.ran((meta.topic, meta.partition), meta.offset)
            if self._cadence is not None:
                self._cadence.run_finished(self.tracker.unfinished)

    def _load_state(self, engine_key: Hashable) -> bytes | None:
        partition, key = cast(EngineKey, engine_key)
        store = self.rebalancer.store_of(partition) if self.rebalancer is not None else None
        return None if store is None else store.get(key)

    def _replay_bound(self, partition: int) -> int | None:
        """The state partition's offset below which no record will be processed again: the offset last
        committed, or, before any commit since the assignment and with nothing consumed, the position
        (where consuming resumes, which is the group's committed offset)."""
        topic_partition = (self.settings.state_topic, partition)
        committed = self.tracker.committed(topic_partition)
        if committed is not None:
            return committed
        if self.tracker.consumed(topic_partition) or self.consumer is None:
            return None
        position = self.consumer.position([TopicPartition(*topic_partition)])[0].offset
        return position if position >= 0 else None

    def _committed(self, checkpoint: Checkpoint) -> None:
        assert self.hot_keys is not None
        self.hot_keys.committed(checkpoint.deltas)
        self.observer.committed(checkpoint)
        self.observation.committed(checkpoint)

    # -- observability -------------------------------------------------------------------------------
    def _probe_broker(self) -> None:
        """Raises unless a broker answers a metadata request (runs in a thread while Kafka is down)."""
        assert self.checkpointer is not None
        self.checkpointer.producer.producer.list_topics(timeout=2.0)

    def _readiness(self) -> tuple[bool, dict[str, object]]:
        """Ready: partitions restored and every model endpoint answering (liveness ignores the models: a
        restart would not bring one back, and runs resume by themselves)."""
        models_ok, models = model_endpoints_readiness(model_endpoints)
        r = self.rebalancer
        if r is None:
            return False, {"assigned_partitions": 0, "restoring_partitions": 0, **models}
        restoring = r.restoring
        return (self.liveness.alive and restoring == 0 and self.consumer is not None and models_ok,
                {"assigned_partitions": len(r.partitions), "restoring_partitions": restoring, **models})
