"""The one event loop that runs agent plans, used by the local runner and the Kafka worker.

Semantics:
* Each input becomes an ``InputEvent`` starting a *run* for its key. Every action subscribed
  to an event's type runs, one after another; events they send are processed in order;
  ``OutputEvent`` payloads leave the agent. The run ends when no events remain.
* Runs of one key are strictly sequential, in submission order; different keys interleave
  freely on one asyncio loop, bounded by ``max_concurrent_runs``.
* Between two actions the key's state (memory, pending events, journal of durable calls) is
  consistent; :meth:`Engine.collect` snapshots it at that boundary. While an async action is
  in flight the snapshot is the state from before the action plus the journal entries the
  action has recorded so far, so a replay re-runs the action and reuses those results.

The driver (local runner or Kafka worker) owns persistence: it submits inputs, periodically
collects :class:`KeyDelta` s (state, outputs, finished inputs, failures), persists them and
calls :meth:`Engine.release` so idle keys can leave memory.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FunctionType, MethodType
from typing import Any, TypeVar, cast

from agentplan import codec
from agentplan.agent import ActionSpec
from agentplan.approvals import ApprovalDecisionEvent, ApprovalRequestEvent
from agentplan.budgets import BudgetExceeded, budget_policy
from agentplan.config import AgentConfiguration, ErrorHandlingStrategy
from agentplan.events import Event, InputEvent, OutputEvent
from agentplan.exceptions import (
    ActionError,
    DurableCallError,
    SerializationError,
    TransientError,
)
from agentplan.fastmodel import trusted
from agentplan.memory import MemoryObject, MemoryType
from agentplan.metric_group import MetricGroup
from agentplan.metrics import MetricsSink, NullMetrics
from agentplan.plan import AgentPlan
from agentplan.resources import ResourceType
from agentplan.runner_context import SELF_JOURNALED, RunnerContext
from agentplan.runtime import durable, parking
from agentplan.runtime.observe import Observation, ObservedAction, ObservedRun
from agentplan.runtime.run_slots import RunSlots
from agentplan.runtime.state_ttl import ShortTermMemoryTtl

logger = logging.getLogger(__name__)

_NOT_RECORDED = object()  # _ActionContext._replayed: the journal holds no outcome of this call

T = TypeVar("T")
# What the idle-state cache charges a key against its budget: the slot itself (queue, lists, memory
# tree, hooks; ~2.4 KB with a small state, measured with tracemalloc) plus its decoded state, taken as
# a multiple of the encoded size (decoded dicts and strings are several times larger than their JSON).
IDLE_SLOT_OVERHEAD_BYTES = 2400
DECODED_STATE_FACTOR = 4
StateLoader = Callable[[Hashable], "bytes | None"]


def _appended(items: list[T] | None, item: T) -> list[T]:
    """``items`` with ``item`` added. A slot's lists are made by their first item: most stay empty, and each
    one would be a container the cyclic GC scans again and again while its key's run is in flight."""
    if items is None:
        return [item]
    items.append(item)
    return items


_APPROVAL, _OUTPUT, _OTHER_EVENT, _NOT_EVENT = 1, 2, 3, 4
_event_kinds: dict[type, int] = {}  # per class: what the loop does with its events


def _event_kind(cls: type) -> int:
    """One of the kinds above, cached per class (an isinstance of a pydantic class that is not an exact match
    runs ABCMeta's check in Python, ~0.3 us; the loop asks it for every event)."""
    kind = _event_kinds.get(cls)
    if kind is None:
        kind = _event_kinds[cls] = (_APPROVAL if issubclass(cls, ApprovalRequestEvent) else
                                    _OUTPUT if issubclass(cls, OutputEvent) else
                                    _OTHER_EVENT if issubclass(cls, Event) else _NOT_EVENT)
    return kind


def _is_coroutine_function(fn: Any) -> bool:
    """``inspect.iscoroutinefunction``, answered from the code flags for a plain ``async def`` (the common
    case, e.g. a chat action's model call), which spares inspect's unwrapping per durable call."""
    if type(fn) is MethodType:  # a bound method (the chat action's model call): its function's flags
        fn = fn.__func__
    return (type(fn) is FunctionType and bool(fn.__code__.co_flags & inspect.CO_COROUTINE)) \
        or inspect.iscoroutinefunction(fn)


@dataclass(slots=True)
class _Input:
    value: Any
    position: int | None
    meta: Any


@dataclass
class KeyDelta:
    """What changed for one key since the last :meth:`Engine.collect`."""

    key: Hashable
    state: bytes | None  # None: the key's state is deleted (its short-term memory TTL ran out)
    version: int
    outputs: list[tuple[Any, Any]] = field(default_factory=list)  # (input meta, output payload)
    finished: list[Any] = field(default_factory=list)  # metas of inputs now done (incl. skipped/failed)
    failures: list[tuple[Any, Any, BaseException]] = field(default_factory=list)  # (meta, input, error)
    skipped: list[Any] = field(default_factory=list)  # metas already finished before (replay)
    log: Sequence[dict[str, Any]] = ()  # event-log records (agentplan.runtime.observe)
    requests: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)  # (input meta, approval request)


class _Run:
    __slots__ = ("run_id", "position", "meta", "input", "pending", "cursor", "sensory", "journal",
                 "next_event_seq", "started", "awaiting_input", "obs", "parked")

    def __init__(self, run_id: str, position: int | None, meta: Any, input_value: Any) -> None:
        self.run_id = run_id
        self.position = position
        self.meta = meta
        self.input = input_value
        self.pending: list[Event] = []  # a few events at a time: a list is ~700 bytes smaller than a deque
        self.cursor = 0  # actions of pending[0] already completed
        # Made by the run's first access (Engine._sensory_of): most runs never touch it, and its tree and hooks
        # are containers the cyclic GC would scan for as long as the run is in flight.
        self.sensory: MemoryObject | None = None
        self.journal: dict[str, Any] = {}  # durable results of the action in flight
        self.next_event_seq = 0
        self.started = time.monotonic()
        self.awaiting_input = False  # restored from state; waits for its input to be replayed
        self.obs: ObservedRun | None = None  # this attempt, when an Observation is installed
        self.parked: dict[str, Any] | None = None  # the approval request it waits for (agentplan.approvals)


class _Slot:
    """Live state of one key."""

    __slots__ = ("key", "queue", "memory", "progress", "run", "run_counter", "task", "version",
                 "collected_version", "in_action", "memory_backup", "sensory_backup", "ctx",
                 "outputs", "finished", "failures", "skipped", "cached_bytes", "log", "usage", "requests",
                 "decision", "wakeup", "persist_waiters", "touched_ms", "tombstone")

    def __init__(self, key: Hashable) -> None:
        self.key = key
        # Made by the key's first submit and dropped when it empties: an empty deque is ~760 bytes, held by
        # every slot (idle ones in the cache too).
        self.queue: deque[_Input] | None = None
        self.memory = MemoryObject()
        self.progress: int | None = None
        self.run: _Run | None = None
        self.run_counter = 0
        self.task: asyncio.Task[None] | None = None
        self.version = 0
        self.collected_version = 0
        self.in_action = False
        self.memory_backup: Any = None  # memory before the action in flight first wrote it
        self.sensory_backup: Any = None
        self.ctx: _ActionContext | None = None
        # What the next collect reports; None while empty (see _appended).
        self.outputs: list[tuple[Any, Any]] | None = None
        self.finished: list[Any] | None = None
        self.failures: list[tuple[Any, Any, BaseException]] | None = None
        self.skipped: list[Any] | None = None
        self.log: list[dict[str, Any]] | None = None
        self.requests: list[tuple[Any, dict[str, Any]]] | None = None
        self.cached_bytes = 0  # charged to the idle-state cache while the key is idle
        self.usage: dict[str, Any] | None = None  # LLM usage against budgets (agentplan.budgets)
        self.decision: tuple[ApprovalDecisionEvent, Any] | None = None  # delivered, not yet taken by its run
        self.wakeup: asyncio.Event | None = None  # set while the run is parked
        self.persist_waiters: list[tuple[int, asyncio.Future[None]]] | None = None  # (version, woken once durable)
        self.touched_ms: int | None = None  # short-term memory TTL: last renewal (wall clock ms)
        self.tombstone = False  # expired: the next collect deletes the key's state

    def add_output(self, meta: Any, payload: Any) -> None:
        self.outputs = _appended(self.outputs, (meta, payload))

    def add_finished(self, meta: Any) -> None:
        self.finished = _appended(self.finished, meta)

    def add_failure(self, meta: Any, value: Any, error: BaseException) -> None:
        self.failures = _appended(self.failures, (meta, value, error))

    def add_skipped(self, meta: Any) -> None:
        self.skipped = _appended(self.skipped, meta)

    def add_request(self, meta: Any, request: dict[str, Any]) -> None:
        self.requests = _appended(self.requests, (meta, request))

    def add_log(self, record: dict[str, Any]) -> None:  # observe.LogOwner
        self.log = _appended(self.log, record)

    # The memory hooks of Engine._tracked and _sensory_of, as methods: no closures and cells to make per key
    # or run (they find the memory through the slot, which holds the tracked trees).
    def guard_memory(self) -> None:
        if self.ctx is not None and self.ctx._durable_depth:
            raise DurableCallError("memory is not accessible inside a durable call (it may be replayed)")

    def snapshot_sensory(self) -> None:
        if self.in_action and self.sensory_backup is None and self.run is not None and self.run.sensory is not None:
            self.sensory_backup = self.run.sensory.to_data()

    def leave(self) -> None:
        """The engine forgets this slot: its memories' hooks let go of it, so refcounting frees the slot and its
        trees at once instead of the cyclic GC at its next full collection (measured: ~13 objects per key)."""
        self.memory.detach_hooks()
        if self.run is not None and self.run.sensory is not None:
            self.run.sensory.detach_hooks()

    def snapshot_memory(self) -> None:
        if self.in_action and self.memory_backup is None:
            self.memory_backup = self.memory.to_data()


class Engine:
    """Runs a compiled :class:`AgentPlan` for many keys on the current asyncio loop."""

    def __init__(self, plan: AgentPlan, *, state_loader: StateLoader | None = None,
                 metrics: MetricsSink | None = None, describe_key: Callable[[Hashable], str] = repr,
                 observation: Observation | None = None, user_key: Callable[[Hashable], str] = str,
                 commits_state: bool = False, on_input_finished: Callable[[Any], None] | None = None) -> None:
        """``describe_key`` renders a key in log lines the way its user knows it (the Kafka worker's keys
        carry their partition, which users never wrote); ``user_key`` is the key as budget key prefixes
        match it. ``observation`` feeds the event log and traces. ``commits_state``: the driver persists
        collected deltas while runs go on and calls :meth:`release` once they are durable (the Kafka
        worker); a reconciled durable call then waits for its start to be durable before it runs.
        ``on_input_finished`` is called with an input's meta when its run finishes or it is skipped or
        refused, before any collect: the Kafka worker frees the record's in-flight slot then."""
        self.plan = plan
        self.on_input_finished = on_input_finished
        self.observation = observation
        self.commits_state = commits_state
        self.metric_group = MetricGroup()
        self._describe_key = describe_key
        self.config: AgentConfiguration = plan.config
        self._ttl = ShortTermMemoryTtl.from_config(self.config)
        self.metrics: MetricsSink = metrics or NullMetrics()
        self._load_state = state_loader
        self._slots: dict[Hashable, _Slot] = {}  # busy keys and keys changed since the last release
        # Idle keys whose state is persisted, least recently used first: a key's next input revives
        # its slot instead of reading and decoding its state again.
        self._idle_slots: OrderedDict[Hashable, _Slot] = OrderedDict()
        self._idle_bytes = 0
        self._run_slots: RunSlots | None = None
        self._busy_keys = 0
        self._idle: asyncio.Event | None = None
        self.queued_inputs = 0  # submitted, run not started yet
        self.inflight_runs = 0
        self.budgets = budget_policy(self.config.budgets)
        self._user_key = user_key
        self._parked_keys = 0  # busy keys waiting for a budget window or a decision: not waited for by wait_quiet()
        self._quiet: asyncio.Event | None = None

    # -- driver API ----------------------------------------------------------------------------
    def submit(self, key: Hashable, value: Any, position: int | None = None, meta: Any = None) -> None:
        """Queue an input for ``key``. ``position`` (e.g. an offset) must increase per key; inputs
        at or below the key's recorded progress are skipped as already processed."""
        if self._idle is None:
            self._idle = asyncio.Event()
            self._idle.set()
            self._quiet = asyncio.Event()
            self._quiet.set()
            self._run_slots = RunSlots(self.config.max_concurrent_runs)
        slot = self._slots.get(key)
        if slot is None:
            slot = self._idle_slots.pop(key, None)
            if slot is None:
                slot = self._new_slot(key)
            else:
                self._idle_bytes -= slot.cached_bytes
                self._slots[key] = slot
        if slot.queue is None:
            slot.queue = deque()
        slot.queue.append(_Input(value, position, meta))
        self.queued_inputs += 1
        if slot.task is None:
            # The events are set exactly when no key is busy / every busy key is parked (_drive, _parked).
            if self._busy_keys == 0:
                self._idle.clear()
            if self._busy_keys == self._parked_keys:
                assert self._quiet is not None
                self._quiet.clear()
            self._busy_keys += 1
            # Unnamed: a task name costs a repr per run.
            slot.task = asyncio.get_running_loop().create_task(self._drive(slot))

    def collect(self) -> list[KeyDelta]:
        """Deltas of every key that changed since the last call, consistent at action boundaries."""
        deltas = []
        for slot in self._slots.values():
            if slot.version == slot.collected_version:
                continue
            # The delta takes the slot's lists; later items go to new ones.
            deltas.append(KeyDelta(slot.key, None if slot.tombstone else self._encode_state(slot), slot.version,
                                   slot.outputs or [], slot.finished or [], slot.failures or [], slot.skipped or [],
                                   slot.log or (), slot.requests or []))
            slot.outputs = slot.finished = slot.failures = slot.skipped = slot.log = slot.requests = None
            slot.collected_version = slot.version
        return deltas

    def release(self, deltas: list[KeyDelta]) -> None:
        """The driver persisted ``deltas``: keys idle and unchanged since move to the idle-state cache,
        whose least recently used keys leave memory once it is over budget."""
        budget = self.config.idle_state_cache_bytes
        for delta in deltas:
            slot = self._slots.get(delta.key)
            if slot is not None and slot.persist_waiters:
                self._wake_persisted(slot, delta.version)
            if (slot is not None and slot.task is None and slot.version == delta.version and not slot.queue
                    and slot.decision is None):
                del self._slots[delta.key]
                if budget and delta.state is not None:
                    slot.cached_bytes = IDLE_SLOT_OVERHEAD_BYTES + DECODED_STATE_FACTOR * len(delta.state)
                    self._idle_slots[delta.key] = slot
                    self._idle_bytes += slot.cached_bytes
                else:
                    slot.leave()
        while self._idle_bytes > budget and self._idle_slots:
            _key, evicted = self._idle_slots.popitem(last=False)
            self._idle_bytes -= evicted.cached_bytes
            evicted.leave()

    @staticmethod
    def _wake_persisted(slot: _Slot, version: int) -> None:
        waiting = []
        for target, future in slot.persist_waiters or ():
            if target <= version:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((target, future))
        slot.persist_waiters = waiting or None

    async def persisted(self, slot: _Slot) -> None:
        """Wait until the key's state as it is now is durable (a no-op unless the driver commits state)."""
        if not self.commits_state:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        slot.persist_waiters = _appended(slot.persist_waiters, (slot.version, future))
        await future

    def expire(self, key: Hashable) -> bool:
        """Delete an idle key's state (its short-term memory TTL ran out): the next :meth:`collect`
        reports it with ``state`` None. A key that is busy or has uncollected changes is left alone."""
        if key in self._slots:
            return False
        cached = self._idle_slots.pop(key, None)
        if cached is not None:
            self._idle_bytes -= cached.cached_bytes
            cached.leave()
        slot = _Slot(key)  # an input arriving before the commit starts from this empty state, not the store's
        slot.memory = self._tracked(slot, None, "memory_backup")
        slot.tombstone = True
        slot.version = 1
        self._slots[key] = slot
        return True

    def cancel_keys(self, predicate: Callable[[Hashable], bool]) -> int:
        """Stop and forget keys (e.g. of revoked partitions); uncollected changes are dropped."""
        # Idle keys go too: another owner may change them before they come back.
        for key in [k for k in self._idle_slots if predicate(k)]:
            idle = self._idle_slots.pop(key)
            self._idle_bytes -= idle.cached_bytes
            idle.leave()
        doomed = [k for k in self._slots if predicate(k)]
        for key in doomed:
            slot = self._slots.pop(key)
            if slot.queue:
                self.queued_inputs -= len(slot.queue)
                slot.queue.clear()
            if slot.task is not None:
                slot.task.cancel()
        return len(doomed)

    async def wait_idle(self) -> None:
        """Return when no key has queued or running work."""
        if self._idle is not None:
            await self._idle.wait()

    async def wait_quiet(self) -> None:
        """Return when every key is idle or parked (waiting for its budget window or for a decision): a drain
        at shutdown need not wait for those, whose records stay uncommitted and resume on the next owner."""
        if self._quiet is not None:
            await self._quiet.wait()

    @contextmanager
    def _parked(self) -> Iterator[None]:
        assert self._quiet is not None
        self._parked_keys += 1
        if self._busy_keys <= self._parked_keys:
            self._quiet.set()
        try:
            yield
        finally:
            self._parked_keys -= 1
            self._quiet.clear()

    @property
    def active_keys(self) -> int:
        return self._busy_keys

    def key_count(self) -> int:
        """Keys busy, or changed since the driver last released them (the idle-state cache aside)."""
        return len(self._slots)

    def cached_key_count(self) -> int:
        """Idle keys kept in memory by the idle-state cache."""
        return len(self._idle_slots)

    async def close(self) -> None:
        self.cancel_keys(lambda _k: True)
        await asyncio.sleep(0)

    # -- state encoding ------------------------------------------------------------------------------
    def _new_slot(self, key: Hashable) -> _Slot:
        slot = _Slot(key)
        raw = self._load_state(key) if self._load_state is not None else None
        if raw is not None:
            self._decode_state(slot, raw)
        slot.memory = self._tracked(slot, slot.memory, "memory_backup")
        if slot.run is not None and slot.run.sensory is not None:
            slot.run.sensory = self._tracked(slot, slot.run.sensory, "sensory_backup")
        self._slots[key] = slot
        return slot

    def _tracked(self, slot: _Slot, source: MemoryObject | None, backup: str) -> MemoryObject:
        """``source``'s tree with the engine's hooks: no access inside durable calls, and a snapshot
        (into ``slot.<backup>``) before the first write of an action, for rollback and checkpoints. The
        caller makes the result ``slot.memory`` (or ``slot.run.sensory``), where the hooks find it."""
        node = source._node if source is not None else None
        if backup == "sensory_backup":
            return MemoryObject(node, slot.guard_memory, slot.snapshot_sensory, MemoryType.SENSORY)
        guard: Callable[[], None] = slot.guard_memory
        before_write: Callable[[], None] = slot.snapshot_memory
        if self._ttl is not None:
            guard, before_write = self._ttl.hooks(slot, guard, before_write)
        return MemoryObject(node, guard, before_write, MemoryType.SHORT_TERM)

    @staticmethod
    def _sensory_of(slot: _Slot, run: _Run) -> MemoryObject:
        """The run's sensory memory, made empty by the first access, with :meth:`_tracked`'s hooks as the slot's
        methods (they find the tree through ``slot.run``): two closures per run cost ~1 us."""
        if run.sensory is None:
            run.sensory = MemoryObject(None, slot.guard_memory, slot.snapshot_sensory, MemoryType.SENSORY)
        return run.sensory

    def _encode_state(self, slot: _Slot) -> bytes:
        # Backups exist only while an action runs: then the state from before it is the consistent one.
        memory = slot.memory_backup if slot.memory_backup is not None else slot.memory.to_data()
        data: dict[str, Any] = {"m": memory, "p": slot.progress}
        if slot.touched_ms is not None:
            data["t"] = slot.touched_ms
        if slot.usage is not None:
            data["u"] = slot.usage
        run = slot.run
        if run is not None:
            sensory = (slot.sensory_backup if slot.sensory_backup is not None else
                       run.sensory.to_data() if run.sensory is not None else {})  # {}: an empty tree's data
            data["r"] = {
                "id": run.run_id, "pos": run.position, "in": codec.encode(run.input),
                "pending": [e.to_record() for e in run.pending], "cur": run.cursor, "s": sensory,
                "j": durable.encode_entries(run.journal) if run.journal else run.journal, "n": run.next_event_seq,
            }
            if run.parked is not None:
                data["r"]["pk"] = run.parked
        return codec.dump_json(data)

    def _decode_state(self, slot: _Slot, raw: bytes) -> None:
        try:
            data = json.loads(raw)
            slot.memory = MemoryObject.from_data(data.get("m"))
            slot.progress = data.get("p")
            slot.touched_ms = data.get("t")
            slot.usage = data.get("u")
            r = data.get("r")
            if r is not None:
                run = _Run(r["id"], r["pos"], None, codec.decode(r.get("in")))
                run.pending = [Event.from_record(rec) for rec in r["pending"]]
                run.cursor = r["cur"]
                run.sensory = MemoryObject.from_data(r.get("s"))
                run.journal = r.get("j") or {}
                run.next_event_seq = r["n"]
                run.parked = r.get("pk")
                run.awaiting_input = True
                slot.run = run
        except (ValueError, KeyError, TypeError) as exc:
            raise SerializationError(f"corrupt state for key {slot.key!r}: {exc}") from exc

    # -- the loop --------------------------------------------------------------------------------------
    async def _drive(self, slot: _Slot) -> None:
        assert self._run_slots is not None and self._idle is not None
        try:
            while slot.queue:  # None or empty: done
                item = slot.queue.popleft()
                if not slot.queue:  # no deque held while the run goes on (a submit makes a new one)
                    slot.queue = None
                self.queued_inputs -= 1
                run = slot.run
                resumed = False
                if run is not None and run.awaiting_input:
                    resumed = True
                    if item.position is not None and run.position is not None and item.position < run.position:
                        self._skip(slot, item)
                        continue
                    if item.position != run.position:
                        logger.warning("key %s: resuming run %s although input %s arrived first",
                                       self._describe_key(slot.key), run.run_id, item.position)
                        if slot.queue is None:
                            slot.queue = deque()
                        slot.queue.appendleft(item)
                        self.queued_inputs += 1
                    else:
                        run.meta = item.meta
                    run.awaiting_input = False
                elif item.position is not None and slot.progress is not None and item.position <= slot.progress:
                    self._skip(slot, item)
                    continue
                elif self.budgets is not None and (refused := await self.budgets.admit(
                        slot.usage, self._user_key(slot.key), item.value, self._describe_key(slot.key),
                        self._parked)) is not None:
                    self._refuse(slot, item, refused)
                    continue
                else:
                    slot.run_counter += 1
                    run_id = f"p{item.position}" if item.position is not None else f"r{slot.run_counter}"
                    run = slot.run = _Run(run_id, item.position, item.meta, item.value)
                    if self._ttl is not None:
                        slot.tombstone = False
                        if self._ttl.visible_memory_expired(slot):
                            slot.memory.clear()
                    # Not validated: an InputEvent's fields take any value (validation cost ~1 us per run).
                    first = trusted(InputEvent, {"id": f"{run_id}.0", "type": None, "attributes": {},
                                                 "input": item.value}, {"id", "input"})
                    run.next_event_seq = 1
                    run.pending.append(first)
                    slot.version += 1
                if self.observation is not None and run.obs is None:
                    run.obs = self.observation.start_run(slot, slot.key, run.run_id, run.meta,
                                                         None if resumed else run.pending[0])
                run_slots = self._run_slots
                if not run_slots.try_acquire():
                    await run_slots.acquire()
                self.inflight_runs += 1
                try:
                    await self._execute_run(slot, run)
                finally:
                    self.inflight_runs -= 1
                    run_slots.release()
        finally:
            slot.task = None
            if not slot.queue:
                slot.queue = None
            self._busy_keys -= 1
            if self._busy_keys == 0:
                self._idle.set()
            if self._busy_keys <= self._parked_keys:
                assert self._quiet is not None
                self._quiet.set()

    def deliver(self, key: Hashable, decision: ApprovalDecisionEvent, meta: Any = None) -> None:
        """A decision for ``key``'s parked run (see :mod:`agentplan.runtime.parking`)."""
        parking.deliver(self, key, decision, meta)

    def _slot_of(self, key: Hashable) -> _Slot:
        """``key``'s slot, revived from the idle-state cache or loaded from its state when needed."""
        slot = self._slots.get(key)
        if slot is None:
            slot = self._idle_slots.pop(key, None)
            if slot is None:
                return self._new_slot(key)
            self._idle_bytes -= slot.cached_bytes
            self._slots[key] = slot
        return slot

    def _refuse(self, slot: _Slot, item: _Input, error: BudgetExceeded) -> None:
        """Dead-letter an input its key's budget refused; it counts as finished, like a failed run."""
        logger.warning("%s", error)
        slot.add_failure(item.meta, item.value, error)
        slot.add_finished(item.meta)
        if item.position is not None:
            slot.progress = item.position
        slot.version += 1
        if self.on_input_finished is not None:
            self.on_input_finished(item.meta)

    def _skip(self, slot: _Slot, item: _Input) -> None:
        slot.add_skipped(item.meta)
        slot.add_finished(item.meta)
        slot.version += 1
        if self.on_input_finished is not None:
            self.on_input_finished(item.meta)

    async def _execute_run(self, slot: _Slot, run: _Run) -> None:
        error: ActionError | None = None
        try:
            while run.pending:
                event = run.pending[0]
                if (_event_kinds.get(type(event)) or _event_kind(type(event))) == _APPROVAL:
                    await parking.park(self, slot, run, cast(ApprovalRequestEvent, event))
                    continue
                actions = self.plan.actions_for_event(event)
                while run.cursor < len(actions):
                    spec = actions[run.cursor]
                    self._take_emitted(slot, run, await self._execute_action(slot, run, spec, event))
                    run.cursor += 1
                    if run.journal:  # a new dict: a snapshot may hold the old one
                        run.journal = {}
                    slot.version += 1
                del run.pending[0]
                run.cursor = 0
        except ActionError as exc:
            logger.warning("key %s: run %s failed: %s", self._describe_key(slot.key), run.run_id, exc)
            slot.add_failure(run.meta, run.input, exc)
            error = exc
        except asyncio.CancelledError:
            if run.obs is not None:
                run.obs.cancel()
            raise
        self._finish_run(slot, run, error)

    @staticmethod
    def _take_emitted(slot: _Slot, run: _Run, emitted: Sequence[Event]) -> None:
        """An action's events: outputs leave the agent, the others queue in its run. (Not a loop in
        _execute_run, whose frame would hold the last list and event while the next action is in flight.)"""
        for out in emitted:
            if (_event_kinds.get(type(out)) or _event_kind(type(out))) == _OUTPUT:
                slot.add_output(run.meta, cast(OutputEvent, out).output)
            else:
                run.pending.append(out)
        run.next_event_seq += len(emitted)

    def _finish_run(self, slot: _Slot, run: _Run, error: ActionError | None = None) -> None:
        if run.obs is not None:
            run.obs.finish(error)
        if run.position is not None:
            slot.progress = run.position
        slot.add_finished(run.meta)
        slot.run = None
        slot.version += 1
        self.metrics.run_finished(time.monotonic() - run.started)
        if self.on_input_finished is not None:
            self.on_input_finished(run.meta)

    async def _execute_action(self, slot: _Slot, run: _Run, spec: ActionSpec, event: Event) -> Sequence[Event]:
        attempt = 0
        transient_attempt = 0
        retries, waited_s = 0, 0.0  # reported by the chat action (ChatResponseEvent.retry_count, ...)
        recorded = len(run.journal)
        while True:
            ctx = _ActionContext(self, slot, run, spec, event)
            ctx.retry_count, ctx.retry_wait_s = retries, waited_s
            if run.obs is not None:
                ctx.observation = run.obs.start_action(spec.name, event, attempt + transient_attempt + 1)
            slot.ctx = ctx
            slot.in_action = True
            started = time.monotonic()
            try:
                if spec.is_async:
                    await spec.func(event, ctx)
                else:
                    spec.func(event, ctx)
                self.metrics.action_finished(spec.name, time.monotonic() - started, None)
                if ctx.observation is not None:
                    ctx.observation.finish(ctx.emitted or (), None)
                return ctx.emitted or ()
            except asyncio.CancelledError as exc:
                if ctx.observation is not None:
                    ctx.observation.finish((), exc)
                raise
            except TransientError as exc:
                if ctx.observation is not None:
                    ctx.observation.finish((), exc)
                # The one retry layer of a model call (the SDK and the transport never retry): the
                # action runs again with its journal kept, so the calls it completed are not repeated.
                self.metrics.action_finished(spec.name, time.monotonic() - started, exc)
                self._rollback(slot, run)
                if len(run.journal) > recorded:  # a later call failed: the budget is per call
                    recorded, transient_attempt = len(run.journal), 0
                transient_attempt += 1
                limit = self.config.transient_retry_limit
                if limit is not None and transient_attempt > limit:
                    raise ActionError(spec.name, exc) from exc
                delay = self.config.retry_delay(transient_attempt - 1, exc.retry_after_s)
                self.metrics.transient_retry(exc.kind)
                retries, waited_s = retries + 1, waited_s + delay
                # DEBUG: an outage is reported once per endpoint (agentplan.endpoints), not per retry.
                logger.debug("action %s hit a transient failure (%s); retry %d in %.2fs",
                             spec.name, exc, transient_attempt, delay)
                await asyncio.sleep(delay)  # cancelled by cancel_keys()/close() at shutdown
            except Exception as exc:  # noqa: BLE001 - user code may raise anything
                if ctx.observation is not None:
                    ctx.observation.finish((), exc)
                self.metrics.action_finished(spec.name, time.monotonic() - started, exc)
                self._rollback(slot, run)
                strategy = self.config.error_handling_strategy
                if strategy is ErrorHandlingStrategy.RETRY and attempt < self.config.max_retries:
                    # A retry re-executes durable calls: the failed attempt's results may be the
                    # reason it failed. (Transient retries keep them: the failing call recorded nothing.)
                    run.journal = {}
                    recorded = 0
                    delay = self.config.retry_delay(attempt)
                    attempt += 1
                    retries, waited_s = retries + 1, waited_s + delay
                    logger.info("key %s: action %s failed (%r); retry %d in %.2fs",
                                self._describe_key(slot.key), spec.name, exc, attempt, delay)
                    await asyncio.sleep(delay)
                    continue
                if strategy is ErrorHandlingStrategy.IGNORE:
                    logger.warning("key %s: action %s failed and is ignored: %r", self._describe_key(slot.key),
                                   spec.name, exc)
                    return ()
                raise ActionError(spec.name, exc) from exc
            finally:
                slot.in_action = False
                slot.ctx = None
                slot.memory_backup = None
                slot.sensory_backup = None

    def _rollback(self, slot: _Slot, run: _Run) -> None:
        """Undo memory writes of a failed action so a retry starts from the same state."""
        if slot.memory_backup is not None:
            slot.memory.replace_data(slot.memory_backup)
        if slot.sensory_backup is not None and run.sensory is not None:
            run.sensory.replace_data(slot.sensory_backup)
        slot.memory_backup = None
        slot.sensory_backup = None


class _ActionContext(RunnerContext):
    """The :class:`RunnerContext` of one action invocation."""

    def __init__(self, engine: Engine, slot: _Slot, run: _Run, spec: ActionSpec, event: Event) -> None:
        self._engine = engine
        self._slot = slot
        self._run = run
        self._spec = spec
        self._event = event
        self._call_index = 0
        self._durable_depth = 0
        self.emitted: list[Event] | None = None  # made by the first send_event (see _appended)
        self.observation: ObservedAction | None = None  # set by the engine when the run is observed
        self.retry_count = 0  # earlier attempts of this action, and the time waited between them
        self.retry_wait_s = 0.0

    def _check_not_durable(self, what: str) -> None:
        if self._durable_depth:
            raise DurableCallError(f"{what} is not allowed inside a durable call (it may be replayed)")

    def send_event(self, event: Event) -> None:
        if self._durable_depth:
            self._check_not_durable("send_event")
        if (_event_kinds.get(type(event)) or _event_kind(type(event))) == _NOT_EVENT:
            raise TypeError(f"send_event expects an Event, got {type(event).__name__}")
        # Written past pydantic's __setattr__: the id is the engine's to set (frozen events too),
        # and the assignment hook cost more than the rest of send_event.
        emitted = len(self.emitted) if self.emitted is not None else 0
        object.__setattr__(event, "id", f"{self._run.run_id}.{self._run.next_event_seq + emitted}")
        self.emitted = _appended(self.emitted, event)

    @property
    def key(self) -> Any:
        return self._slot.key

    @property
    def short_term_memory(self) -> MemoryObject:
        self._check_not_durable("memory access")
        return self._slot.memory

    @property
    def sensory_memory(self) -> MemoryObject:
        self._check_not_durable("memory access")
        return Engine._sensory_of(self._slot, self._run)

    def get_resource(self, name: str, type: ResourceType,  # noqa: A002
                     metric_group: MetricGroup | None = None) -> Any:
        return self._engine.plan.get_resource(name, type)

    @property
    def agent_metric_group(self) -> MetricGroup:
        return self._engine.metric_group

    @property
    def action_metric_group(self) -> MetricGroup:
        return self._engine.metric_group.get_sub_group("action", self._spec.name)

    @property
    def action_config(self) -> dict[str, Any]:
        return self._spec.config

    @property
    def config(self) -> AgentConfiguration:
        return self._engine.config

    @property
    def metrics(self) -> MetricsSink:
        return self._engine.metrics

    @property
    def event(self) -> Event:
        return self._event

    def _journal_key(self) -> str:
        key = f"{self._event.id}:{self._spec.name}:{self._call_index}"
        self._call_index += 1
        return key

    def _record(self, key: str, result: Any, unchanged: bool = False) -> None:
        try:
            codec.check_storable(result, "durable call result")
        except SerializationError as exc:
            raise DurableCallError(str(exc)) from None
        self._run.journal[key] = durable.Unencoded(result) if unchanged else codec.encode(result)
        budgets = self._engine.budgets
        if budgets is not None:  # usage joins the state together with the journal entry it comes from
            self._slot.usage = budgets.journaled(self._slot.usage, result, self._engine.metrics)
        self._slot.version += 1

    def _replayed(self, key: str, reconciler: Callable[[], Any] | None) -> Any:
        """This call's committed outcome on a replay (or its reconciler's answer for a call that started
        and never recorded a result), else _NOT_RECORDED: the call must run."""
        journal = self._run.journal
        if key in journal:
            if type(journal[key]) is durable.Unencoded:  # a replay returns the stored form's copy, as always
                journal[key] = codec.encode(journal[key].value)
            if not durable.is_started(journal[key]):
                if self.observation is not None:
                    self.observation.replayed_call()
                return codec.decode(journal[key])
            if reconciler is not None:
                return self._reconcile(key, reconciler)
        return _NOT_RECORDED

    def durable_execute(self, fn: Callable[..., T], *args: Any, reconciler: Callable[[], Any] | None = None,
                        **kwargs: Any) -> T:
        if getattr(fn, SELF_JOURNALED, None):  # journals its own calls; see runner_context.SELF_JOURNALED
            return fn(*args, **kwargs)
        key = self._journal_key()
        replayed = self._replayed(key, reconciler)
        if replayed is not _NOT_RECORDED:
            return cast(T, replayed)
        observed = self.observation
        if reconciler is not None:
            # The event loop is blocked until fn returns, so no checkpoint can commit this start before
            # the result: a sync call is reconciled only when its start was committed by other means.
            self._mark_started(key)
        call = observed.start_call(fn) if observed is not None else None
        self._durable_depth += 1
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._forget_started(key)
            if call is not None:
                call.finish(None, exc)
            raise
        finally:
            self._durable_depth -= 1
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()  # never awaited by design; avoids a "never awaited" warning on top
            self._forget_started(key)
            error = DurableCallError("durable_execute got a coroutine; use await ctx.durable_execute_async(...)")
            if call is not None:
                call.finish(None, error)
            raise error
        if call is not None:  # with the journal entry: the record commits with the result (observe.py)
            call.finish(result, None)
        self._record(key, result)
        return result

    async def durable_execute_async(self, fn: Callable[..., T | Awaitable[T]], *args: Any,
                                    reconciler: Callable[[], Any] | None = None, **kwargs: Any) -> T:
        variant = getattr(fn, SELF_JOURNALED, None)
        if variant:  # journals its own calls; see runner_context.SELF_JOURNALED
            return await getattr(fn.__self__, variant)(*args, **kwargs)  # type: ignore[attr-defined]
        key = self._journal_key()
        replayed = self._replayed(key, reconciler)
        if replayed is not _NOT_RECORDED:
            return cast(T, replayed)
        observed = self.observation
        if reconciler is not None:
            self._mark_started(key)
            await self._engine.persisted(self._slot)  # the start is committed before fn runs
        call = observed.start_call(fn) if observed is not None else None
        self._durable_depth += 1
        try:
            if _is_coroutine_function(fn):
                result = await fn(*args, **kwargs)  # type: ignore[misc]
            else:
                result = await asyncio.to_thread(fn, *args, **kwargs)
                if inspect.isawaitable(result):
                    result = await result
        except BaseException as exc:
            self._forget_started(key)
            if call is not None:
                call.finish(None, exc)
            raise
        finally:
            self._durable_depth -= 1
        if call is not None:  # with the journal entry: the record commits with the result (observe.py)
            call.finish(result, None)
        self._record(key, result, getattr(fn, durable.UNCHANGED_RESULT, False))
        return result

    def _mark_started(self, key: str) -> None:
        self._run.journal[key] = durable.STARTED
        self._slot.version += 1

    def _forget_started(self, key: str) -> None:
        """The call's outcome is known (it raised): a retry of the action runs it again."""
        if durable.is_started(self._run.journal.get(key)):
            del self._run.journal[key]
            self._slot.version += 1

    def _reconcile(self, key: str, reconciler: Callable[[], Any]) -> Any:
        """A replay found the call started with no result: the reconciler says what became of it."""
        logger.info("key %s: durable call %s was in flight when its run stopped; reconciling",
                    self._engine._describe_key(self._slot.key), key)
        self._durable_depth += 1
        try:
            result = reconciler()
        except BaseException:
            self._forget_started(key)
            raise
        finally:
            self._durable_depth -= 1
        self._record(key, result)
        return result
