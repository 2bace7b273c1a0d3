"""``agentfleet state inspect`` shows state the engine really wrote under the documented names.

The state is produced by the engine itself (not written by hand), so a change of the engine's
encoding that the inspect tool does not follow fails here.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agentplan import (
    Agent,
    AgentPlan,
    Engine,
    Event,
    InputEvent,
    OutputEvent,
    RunnerContext,
)
from tests.agentplan.support import make_config, run_async
from worker.operator_tools import describe_state, inspect_key
from worker.state.store import PartitionStore

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


class Profile(BaseModel):
    name: str


class Reviewed(Event):
    verdict: str


class Gate:
    entered: asyncio.Event
    release: asyncio.Event


def lookup(text: str) -> dict[str, str]:
    return {"looked_up": text}


def first(event: InputEvent, ctx: RunnerContext) -> None:
    ctx.short_term_memory.set("count", ctx.short_term_memory.get("count", 0) + 1)
    ctx.short_term_memory.set("user.profile", Profile(name="ada"))
    ctx.sensory_memory.set("seen", event.input)
    ctx.send_event(Reviewed(verdict=event.input))


async def second(event: Reviewed, ctx: RunnerContext) -> None:
    result = ctx.durable_execute(lookup, event.verdict)  # recorded in the journal while the action is in flight
    Gate.entered.set()
    await Gate.release.wait()
    ctx.send_event(OutputEvent(output=result))


def agent() -> Agent:
    built = Agent()
    built.add_action("first", [InputEvent], first)
    built.add_action("second", [Reviewed], second)
    return built


def engine_states() -> tuple[bytes, bytes]:
    """The key's state mid-run (``second`` in flight) and after the run finished."""

    async def main() -> tuple[bytes, bytes]:
        Gate.entered, Gate.release = asyncio.Event(), asyncio.Event()
        engine = Engine(AgentPlan.from_agent(agent(), make_config()))
        engine.submit("user-1", "great", position=42, meta="m42")
        await Gate.entered.wait()
        (mid,) = engine.collect()
        Gate.release.set()
        await engine.wait_idle()
        (done,) = engine.collect()
        await engine.close()
        return mid.state, done.state

    return run_async(main())


def test_an_unfinished_run_is_shown_under_documented_names(tmp_path: Path):
    mid, done = engine_states()
    store = PartitionStore(tmp_path / "app" / "2")
    store.apply({b"user-1": mid}, 17)
    store.close()

    shown = inspect_key(tmp_path, "app", "user-1")
    assert shown is not None
    assert json.loads(json.dumps(shown)) == shown  # printable as JSON
    assert set(shown) == {"key", "partition", "changelog_offset", "memory", "finished_through_offset",
                          "unfinished_run"}
    assert (shown["key"], shown["partition"], shown["changelog_offset"]) == ("user-1", 2, 17)
    assert shown["memory"] == {"count": 1, "user": {"profile": {"__model__": f"{__name__}:Profile",
                                                                "value": {"name": "ada"}}}}
    assert shown["finished_through_offset"] is None  # no run of this key has finished yet
    run = shown["unfinished_run"]
    assert set(run) == {"run_id", "input_offset", "input", "pending_events", "actions_done", "sensory_memory",
                        "journal", "next_event_seq"}
    assert run["input_offset"] == 42 and run["input"] == "great" and run["actions_done"] == 0
    assert [e["type"] for e in run["pending_events"]] == [f"{__name__}:Reviewed"]
    assert run["pending_events"][0]["fields"]["verdict"] == "great"
    assert run["sensory_memory"] == {"seen": "great"}
    assert list(run["journal"].values()) == [{"looked_up": "great"}]
    assert all(re.fullmatch(r".+:second:0", k) for k in run["journal"])
    assert isinstance(run["next_event_seq"], int)

    finished = describe_state(json.loads(done))
    assert finished["finished_through_offset"] == 42 and finished["unfinished_run"] is None
    assert finished["memory"]["count"] == 1
    assert not any(name in finished for name in ("m", "p", "r", "other"))


def test_fields_of_a_newer_version_are_shown_not_hidden():
    assert describe_state({"m": {}, "p": 3, "x": [1]})["other"] == {"x": [1]}


def test_readme_documents_every_field_inspect_prints(tmp_path: Path):
    mid, _ = engine_states()
    shown: Any = describe_state(json.loads(mid))
    names = set(shown) | set(shown["unfinished_run"]) | {"key", "partition", "changelog_offset"}
    operations = README[README.index("## Operations"):README.index("### Security")]
    for name in names:
        assert f"`{name}`" in operations, f"README's Operations section does not document {name}"
