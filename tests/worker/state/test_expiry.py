"""The TTL sweep over real RocksDB stores, against the engine: which keys it expires, in bounded rounds."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from agentplan import Agent, AgentConfiguration, AgentPlan, Engine
from agentplan.runtime.state_ttl import ShortTermMemoryTtl, now_ms
from worker.state.expiry import StateExpiry
from worker.state.store import PartitionStore


def state(touched_ms: int, progress: int | None, running: bool = False) -> bytes:
    data: dict[str, object] = {"m": {"v": {"n": 1}}, "p": progress, "t": touched_ms}
    if running:
        data["r"] = {"id": "p9"}
    return json.dumps(data).encode()


def test_sweep_expires_only_idle_expired_keys_below_the_committed_offset(tmp_path: Path) -> None:
    config = AgentConfiguration(short_term_memory_state_ttl_ms=1000)
    ttl = ShortTermMemoryTtl.from_config(config)
    assert ttl is not None
    old, fresh = now_ms() - 5000, now_ms()
    store = PartitionStore(tmp_path / "0")
    states: dict[bytes, bytes | None] = {f"old{i}".encode(): state(old, i) for i in range(7)}
    states.update({b"fresh": state(fresh, 1), b"running": state(old, 2, running=True),
                   b"ahead": state(old, 50)})  # progress past the committed offset 20: a replay may need it
    store.apply(states, 0)

    async def sweep() -> list[tuple[object, bytes | None]]:
        engine = Engine(AgentPlan.from_agent(Agent(), config))
        expiry = StateExpiry(ttl, engine, replay_bound=lambda partition: 20, keys_per_round=3)
        rounds = 0
        expiry.maybe_sweep(expiry.interval_s + 1e9, {0: store})  # starts a sweep: at most 3 keys per round
        rounds += 1
        while expiry._pass is not None:
            expiry.maybe_sweep(0.0, {0: store})
            rounds += 1
        assert rounds == 4  # 10 keys, 3 per round
        return [(delta.key, delta.state) for delta in engine.collect()]

    deleted = asyncio.run(sweep())
    assert sorted(key for key, _ in deleted) == [(0, f"old{i}".encode()) for i in range(7)]
    assert all(value is None for _, value in deleted)
    store.close()
