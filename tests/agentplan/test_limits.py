"""The endpoint limiter: permits in order, back-off once per window on overload, a Retry-After pauses the
whole endpoint, growth while latency stays flat, fleet rates split by share, and settings checked."""

from __future__ import annotations

import asyncio

import pytest

from agentplan import Agent, AgentPlan, OpenAIChatModelConnection, OpenAIChatModelSetup, ResourceDescriptor
from agentplan.exceptions import PlanCompileError, ResourceError, TransientError
from agentplan.limits import EndpointLimiter, LimiterRegistry, LimitSettings, Permit
from tests.agentplan.support import EVENT_LOOPS, make_config, run_async, run_on_loop


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def rate_limited(retry_after_s: float | None = None) -> TransientError:
    return TransientError("rate limited", kind="rate_limit", retry_after_s=retry_after_s)


def test_permits_bound_calls_in_flight_and_go_in_arrival_order() -> None:
    async def main() -> None:
        busy = EndpointLimiter("http://a/v1", LimitSettings(max_concurrency=2, initial_concurrency=2))
        other = EndpointLimiter("http://b/v1", LimitSettings(max_concurrency=1))
        held = [await busy.acquire(), await busy.acquire()]
        order: list[int] = []

        async def waiter(i: int) -> Permit:
            permit = await busy.acquire()
            order.append(i)
            return permit

        waiters = [asyncio.create_task(waiter(i)) for i in range(3)]
        await asyncio.sleep(0)
        assert busy.in_flight == 2 and busy.would_wait() and order == []
        # Another endpoint is not held up by this one's queue, nor is the loop.
        (await asyncio.wait_for(other.acquire(), 1.0)).finish(None)
        held.pop().finish(rate_limited())  # no Retry-After: no pause, one permit fewer (2 * 0.7 -> 1)
        held.pop().finish(None)
        first = await asyncio.wait_for(waiters[0], 1.0)
        assert order == [0] and busy.limit < 2
        first.finish(None)
        for task in waiters[1:]:
            (await asyncio.wait_for(task, 1.0)).finish(None)
        assert order == [0, 1, 2] and busy.in_flight == 0
        assert busy.throttled_s > 0

    run_async(main())


def test_a_cancelled_waiter_gives_its_place_back() -> None:
    async def main() -> None:
        limiter = EndpointLimiter("http://a/v1", LimitSettings(max_concurrency=1))
        held = await limiter.acquire()
        gone = asyncio.create_task(limiter.acquire())
        kept = asyncio.create_task(limiter.acquire())
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        held.finish(asyncio.CancelledError())
        (await asyncio.wait_for(kept, 1.0)).finish(None)
        assert limiter.in_flight == 0

    run_async(main())


def test_retry_after_pauses_the_whole_endpoint_and_overload_shrinks_once_per_window() -> None:
    async def main() -> None:
        limiter = EndpointLimiter("http://a/v1", LimitSettings(max_concurrency=100, initial_concurrency=20))
        permits = [await limiter.acquire() for _ in range(5)]
        for permit in permits[:4]:  # four 429s of one window: one decrease, not four
            permit.finish(rate_limited(retry_after_s=0.3))
        assert limiter.limit == pytest.approx(14)
        assert limiter.would_wait()  # paused, though 15 permits are free
        loop = asyncio.get_running_loop()
        began = loop.time()
        (await asyncio.wait_for(limiter.acquire(), 2.0)).finish(None)
        assert loop.time() - began >= 0.28
        permits[4].finish(rate_limited())  # granted before the decrease: no second one
        assert limiter.limit == pytest.approx(14)

    run_async(main())


@pytest.mark.parametrize("loop_kind", EVENT_LOOPS)
def test_a_pause_ending_within_a_millisecond_lets_every_waiter_through(loop_kind: str) -> None:
    # uvloop runs a delay under half a millisecond as call_soon: the limiter's wake-up is then a plain
    # Handle, and a second waiter arriving before it ran used to fail its model call (the record was
    # dead-lettered in test_model_limits[adaptive]).
    clock = FakeClock()

    async def main() -> None:
        limiter = EndpointLimiter("http://a/v1", LimitSettings(max_concurrency=4, initial_concurrency=4), clock=clock)
        (await limiter.acquire()).finish(rate_limited(retry_after_s=0.0003))
        waiters = [asyncio.create_task(limiter.acquire()) for _ in range(2)]
        await asyncio.sleep(0)  # both queued behind the pause, the second after the first armed the wake-up
        clock.now += 0.001
        permits = await asyncio.wait_for(asyncio.gather(*waiters), 1.0)
        assert limiter.in_flight == 2
        for permit in permits:
            permit.finish(None)
        assert limiter.in_flight == 0

    run_on_loop(loop_kind, main())


def test_a_waiter_whose_dispatch_failed_leaves_the_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()

    async def main() -> None:
        limiter = EndpointLimiter("http://a/v1", LimitSettings(max_concurrency=4, initial_concurrency=4), clock=clock)
        (await limiter.acquire()).finish(rate_limited(retry_after_s=0.5))

        def broken(seconds: float) -> None:
            raise RuntimeError("no timer")

        monkeypatch.setattr(limiter, "_wake_in", broken)
        with pytest.raises(RuntimeError, match="no timer"):
            await limiter.acquire()
        monkeypatch.undo()
        clock.now += 1.0
        permit = await asyncio.wait_for(limiter.acquire(), 1.0)
        assert limiter.in_flight == 1  # no permit went to the failed caller's abandoned place in the queue
        permit.finish(None)

    run_async(main())


def test_the_limit_grows_while_latency_is_flat_and_shrinks_when_it_climbs() -> None:
    clock = FakeClock()

    async def main() -> None:
        limiter = EndpointLimiter("http://a/v1", LimitSettings(max_concurrency=64, initial_concurrency=4), clock=clock)

        async def round_trip(latency: float) -> None:
            permits = [await limiter.acquire() for _ in range(int(limiter.limit))]  # the whole limit in use
            clock.now += latency
            for permit in permits:
                permit.finish(None)

        await round_trip(0.1)
        assert limiter.limit == 7  # slow start: +1 per answer of a call granted with half the limit in use
        (await limiter.acquire()).finish(rate_limited())  # the endpoint pushed back: additive from now on
        assert limiter.limit == pytest.approx(4.9)
        for _ in range(5):
            await round_trip(0.1)
        assert 6.5 <= limiter.limit <= 8.5  # 1/limit per such answer
        for _ in range(3):
            await round_trip(0.3)  # latency climbs: the average catches up within a round trip or two
        held = limiter.limit
        for _ in range(3):
            await round_trip(0.3)
        assert limiter.limit == held  # holds while latency stays up
        await round_trip(0.6)  # more than twice the tolerance: queueing at the endpoint, back off
        assert limiter.limit == pytest.approx(held * 0.7)

    run_async(main())


def test_an_unused_limit_does_not_grow() -> None:
    clock = FakeClock()

    async def main() -> None:
        limiter = EndpointLimiter("http://a/v1", LimitSettings(initial_concurrency=10), clock=clock)
        for _ in range(50):
            permit = await limiter.acquire()
            clock.now += 0.05
            permit.finish(None)
        assert limiter.limit == 10

    run_async(main())


def test_fleet_rates_are_split_by_partition_share() -> None:
    clock = FakeClock()

    async def main() -> None:
        registry = LimiterRegistry()
        registry.set_share(1, 4)  # this worker owns 1 of 4 partitions
        limiter = registry.limiter("http://user:pw@a:1/v1?key=x", LimitSettings(requests_per_minute=600))
        assert limiter.url == "http://a:1/v1" and limiter.share == 0.25
        limiter._clock = clock
        for bucket in (limiter._requests,):
            assert bucket is not None
            bucket.stamp = clock.now
        # 600/min fleet-wide -> 2.5/s here; a bucket of one second's worth.
        granted = 0
        while not limiter.would_wait():
            (await limiter.acquire()).finish(None)
            granted += 1
        assert granted == 2
        clock.now += 0.4  # one more slot per 0.4 s
        assert not limiter.would_wait()
        registry.set_share(0, 4)  # all partitions revoked: nothing may go
        clock.now += 10
        assert limiter.would_wait()
        registry.set_share(4, 4)
        clock.now += 1
        assert not limiter.would_wait()
        assert [s.url for s in registry.statuses()] == ["http://a:1/v1"]

    run_async(main())


def test_tokens_per_minute_holds_calls_while_in_debt() -> None:
    clock = FakeClock()

    async def main() -> None:
        limiter = EndpointLimiter("http://a/v1", LimitSettings(tokens_per_minute=6000), clock=clock)  # 100/s
        (await limiter.acquire()).finish(None, tokens=300)  # 100 in the bucket, 300 used: 200 in debt
        assert limiter.would_wait()
        clock.now += 2.1
        assert not limiter.would_wait()

    run_async(main())


@pytest.mark.parametrize(("arguments", "message"), [
    ({"max_concurrency": 0}, "max_concurrency must be an integer >= 1, got 0"),
    ({"initial_concurrency": "8"}, "initial_concurrency must be an integer >= 1"),
    ({"requests_per_minute": -5}, "requests_per_minute must be a number > 0"),
    ({"tokens_per_minute": float("inf")}, "tokens_per_minute must be a number > 0"),
    ({"max_concurrency": 4, "initial_concurrency": 8}, "initial_concurrency (8) is above max_concurrency (4)"),
])
def test_bad_limit_settings_fail_naming_the_argument(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ResourceError, match="OpenAIChatModelConnection: " + message.replace("(", r"\(")
                       .replace(")", r"\)")):
        OpenAIChatModelConnection(api_key="k", **arguments)  # type: ignore[arg-type]


def test_bad_limits_and_fallbacks_fail_when_the_plan_compiles() -> None:
    def plan_with(connection: dict[str, object], setup: dict[str, object]) -> AgentPlan:
        agent = Agent()
        agent.add_resource("llm", ResourceDescriptor(clazz=OpenAIChatModelConnection, **connection))
        agent.add_resource("a", ResourceDescriptor(clazz=OpenAIChatModelSetup, connection="llm", **setup))
        return AgentPlan.from_agent(agent, make_config())

    with pytest.raises(PlanCompileError, match="chat model connection 'llm': requests_per_minute must be"):
        plan_with({"requests_per_minute": 0}, {})
    with pytest.raises(PlanCompileError, match="names fallback 'b', which is not a declared chat_model"):
        plan_with({}, {"fallback": ["b"]})
    with pytest.raises(PlanCompileError, match="names itself as a fallback"):
        plan_with({}, {"fallback": ["a"]})
    with pytest.raises(PlanCompileError, match="fallback must be a list of setup names"):
        plan_with({}, {"fallback": "b"})
    plan_with({"max_concurrency": 8, "requests_per_minute": 60}, {})
