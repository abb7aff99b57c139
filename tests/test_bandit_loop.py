"""The bandit loop against a real Valkey: burn-in, publishing, one leader, cadence, arms that
no longer fit, Redis down, fixed experiments left alone. Time is an injected clock."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from experiments.model import Allocation, Arm, BanditSettings, Experiment, Goal, GoalKind
from proxy.bandit_loop import BanditLoop
from proxy.config import StoreConfig
from proxy.store import Store
from proxy.store.embedded import _free_port
from proxy.store.events import Conversion, Exposure, WeightChange, period_id
from proxy.store.experiment_counts import CountsReader
from tests.store_fixtures import embedded_valkey, store_url

__all__ = ["embedded_valkey", "store_url"]  # fixtures, imported to be found by pytest

pytestmark = pytest.mark.timeout(15)
MANUAL = StoreConfig(socket_timeout=0.2, flush_interval=60)  # only explicit flush()/close()
DAY = "2026-11-22"
T0 = datetime(2026, 11, 22, 12, 0, 0, 700_000, tzinfo=UTC)  # published as 12:00:00
CADENCE = 900
SETTINGS = BanditSettings(floor=0.05, min_units=100, min_conversions=10,
                          cadence_seconds=CADENCE)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now, self.calls = now, 0

    def __call__(self) -> datetime:
        self.calls += 1
        return self.now


def experiment(exp_id: str, *, arms: tuple[str, ...] = ("a", "b"),
               allocation: Allocation = Allocation.BANDIT,
               kind: GoalKind = GoalKind.CUSTOM) -> Experiment:
    share = 1.0 / len(arms)
    return Experiment(id=exp_id, arms=tuple(Arm(arm, share) for arm in arms),
                      goals=(Goal("buy", kind, "buy", primary=True),),
                      allocation=allocation, bandit=SETTINGS)


def defs(*experiments: Experiment) -> Callable[[], dict[str, Experiment]]:
    return lambda: {exp.id: exp for exp in experiments}


@asynccontextmanager
async def opened(url: str, prefix: str) -> AsyncIterator[Store]:
    store = await Store.open(MANUAL, url, prefix=prefix)
    try:
        yield store
    finally:
        await store.close(timeout=0.2)


def prefix() -> str:
    return f"bandit-{uuid.uuid4().hex[:8]}"


async def seed(store: Store, exp: str, arm: str, units: int, conversions: int,
               value: float | None = None) -> None:
    """Counts as the proxy records them: exposures, then conversions, flushed."""
    for _ in range(units):
        store.record(Exposure(exp, arm, DAY, 0.5))
    for _ in range(conversions):
        store.record(Conversion.binary(exp, "buy", arm, DAY) if value is None
                     else Conversion.revenue(exp, "buy", arm, DAY, value, 0.0))
    assert await store.flush()


async def log_of(store: Store, exp: str) -> list[dict[str, Any]]:
    raw = await store.redis.lrange(store._keyspace.weights(exp), 0, -1)
    return [json.loads(item) for item in raw]


async def expire_lock(store: Store, exp: str) -> None:
    """What Redis does one cadence (PX) after the lock was taken."""
    await store.redis.delete(store._keyspace.bandit_lock(exp))


def test_burn_in_publishes_nothing(store_url: str) -> None:
    async def body() -> None:
        async with opened(store_url, prefix()) as store:
            exp = experiment("hero")
            await seed(store, "hero", "a", 150, 30)
            await seed(store, "hero", "b", 20, 5)      # too few units
            loop = BanditLoop(store, defs(exp), clock=Clock(T0))
            assert await loop.step() == ()
            await loop.refresh()
            assert (loop.weights, loop.periods) == ({}, {})
            assert await log_of(store, "hero") == []
            described = loop.describe("hero")
            assert described["phase"] == "burn_in"
            assert "arm 1 has 20 units" in described["detail"]
            assert (described["weights"], described["published_at"]) == (None, None)
            # The lock spaces burn-in computations too: it is held for one cadence.
            ttl = await store.redis.pttl(store._keyspace.bandit_lock("hero"))
            assert CADENCE * 1000 - 5000 < ttl <= CADENCE * 1000

    asyncio.run(body())


def test_enough_data_publishes_weights_that_favour_the_better_arm(store_url: str) -> None:
    async def body() -> None:
        async with opened(store_url, prefix()) as store:
            exp = experiment("hero")
            await seed(store, "hero", "a", 200, 20)
            await seed(store, "hero", "b", 200, 60)
            loop = BanditLoop(store, defs(exp), clock=Clock(T0))
            assert await loop.step() == ("hero",)
            a, b = loop.weights["hero"]
            assert b > 0.9 and a == pytest.approx(SETTINGS.floor, abs=1e-6)
            assert a >= SETTINGS.floor and b >= SETTINGS.floor
            assert a + b == pytest.approx(1.0, abs=1e-12)
            assert loop.periods["hero"] == period_id(T0) == str(int(T0.timestamp()))
            [entry] = await log_of(store, "hero")
            assert entry == {"at": int(T0.timestamp()), "weights": {"a": a, "b": b}}
            described = loop.describe("hero")
            assert described["phase"] == "thompson"
            assert described["weights"] == [a, b]
            assert described["published_at"] == "2026-11-22T12:00:00+00:00"
            # A worker that only follows sees the same after its refresh.
            follower = BanditLoop(store, defs(exp), clock=Clock(T0))
            await follower.refresh()
            assert (follower.weights, follower.periods) == (loop.weights, loop.periods)

    asyncio.run(body())


def test_revenue_goal_uses_conversion_events_as_purchasers(store_url: str) -> None:
    async def body() -> None:
        async with opened(store_url, prefix()) as store:
            exp = experiment("cart", kind=GoalKind.REVENUE)
            await seed(store, "cart", "a", 200, 30, value=10.0)
            await seed(store, "cart", "b", 200, 30, value=30.0)
            loop = BanditLoop(store, defs(exp), clock=Clock(T0))
            assert await loop.step() == ("cart",)
            a, b = loop.weights["cart"]
            assert b > a >= SETTINGS.floor

    asyncio.run(body())


def test_two_nodes_at_the_same_instant_publish_once(store_url: str) -> None:
    async def body() -> None:
        name = prefix()
        async with opened(store_url, name) as one, opened(store_url, name) as two:
            exp = experiment("hero")
            await seed(one, "hero", "a", 200, 20)
            await seed(one, "hero", "b", 200, 60)
            first = BanditLoop(one, defs(exp), clock=Clock(T0))
            second = BanditLoop(two, defs(exp), clock=Clock(T0))
            results = await asyncio.gather(first.step(), second.step())
            assert sorted(results) == [(), ("hero",)]
            assert len(await log_of(one, "hero")) == 1
            await asyncio.gather(first.refresh(), second.refresh())
            assert first.weights == second.weights and "hero" in first.weights
            assert first.periods == second.periods == {"hero": period_id(T0)}

            # A node whose view is stale (it read before the other published) and whose lock
            # attempt succeeds (lock expired early by its clock) reads again and stays quiet.
            third = BanditLoop(two, defs(exp), clock=Clock(T0 + timedelta(seconds=5)))
            await expire_lock(two, "hero")
            assert await third.step() == ()
            assert len(await log_of(one, "hero")) == 1
            assert third.weights == first.weights

    asyncio.run(body())


def test_cadence_spaces_publications(store_url: str) -> None:
    async def body() -> None:
        async with opened(store_url, prefix()) as store:
            exp = experiment("hero")
            await seed(store, "hero", "a", 200, 20)
            await seed(store, "hero", "b", 200, 60)
            clock = Clock(T0)
            loop = BanditLoop(store, defs(exp), clock=clock)
            assert await loop.step() == ("hero",)
            clock.now = T0 + timedelta(seconds=CADENCE - 1)
            await expire_lock(store, "hero")             # even with the lock free
            assert await loop.step() == ()
            assert len(await log_of(store, "hero")) == 1
            clock.now = T0 + timedelta(seconds=CADENCE)  # 12:15:00.7, a cadence after 12:00
            await seed(store, "hero", "a", 100, 40)      # arm a catches up
            await expire_lock(store, "hero")             # a cadence has passed in Redis too
            assert await loop.step() == ("hero",)
            await loop.refresh()
            assert loop.periods["hero"] == period_id(T0 + timedelta(seconds=CADENCE))
            counts = await CountsReader.of(store).read(exp)
            assert len(counts.weights.periods) == 2 and counts.ignored == ()
            assert counts.period_ids == (period_id(T0), loop.periods["hero"])
            assert counts.weights.periods[1].weights == loop.weights["hero"]
            assert counts.weights.periods[1].weights[0] > counts.weights.periods[0].weights[0]

    asyncio.run(body())


def test_entry_for_other_arms_is_ignored(store_url: str) -> None:
    async def body() -> None:
        async with opened(store_url, prefix()) as store:
            old = experiment("hero", arms=("a", "z"))
            new = experiment("hero", arms=("a", "b"))
            ks = store._keyspace
            event = WeightChange("hero", T0, (("a", 0.3), ("z", 0.7)))
            for command in ks.commands_for(event):
                await store.redis.execute_command(command.op, command.key, *command.args)
            loop = BanditLoop(store, defs(old), clock=Clock(T0 + timedelta(seconds=60)))
            await loop.refresh()
            assert loop.weights == {"hero": (0.3, 0.7)}
            loop._experiments = defs(new)                # the rule file changed
            await loop.refresh()
            assert (loop.weights, loop.periods) == ({}, {})
            described = loop.describe("hero")
            assert described["phase"] == "planned" and "['a', 'z']" in described["detail"]
            # A new definition needs weights now, not a cadence later.
            await seed(store, "hero", "a", 200, 20)
            await seed(store, "hero", "b", 200, 60)
            assert await loop.step() == ("hero",)
            assert loop.weights["hero"][1] > 0.9

    asyncio.run(body())


def test_redis_unreachable_keeps_the_last_weights(store_url: str) -> None:
    async def body() -> None:
        exp = experiment("hero")
        async with opened(store_url, prefix()) as store, \
                opened(f"redis://127.0.0.1:{_free_port()}", "dead") as dead:
            assert dead.state == "degraded"
            nowhere = BanditLoop(dead, defs(exp), clock=Clock(T0))
            assert await nowhere.step() == ()
            await nowhere.refresh()
            assert nowhere.weights == {}

            await seed(store, "hero", "a", 200, 20)
            await seed(store, "hero", "b", 200, 60)
            clock = Clock(T0)
            loop = BanditLoop(store, defs(exp), clock=clock)
            assert await loop.step() == ("hero",)
            before = (dict(loop.weights), dict(loop.periods))
            live = store._client
            store._client = dead.redis                   # Redis goes away under the store
            try:
                clock.now = T0 + timedelta(seconds=2 * CADENCE)
                assert await loop.step() == ()
                await loop.refresh()
                assert (loop.weights, loop.periods) == before
                task = asyncio.create_task(BanditLoop(store, defs(exp), clock=clock,
                                                      interval=0.001).run())
                calls = clock.calls
                while clock.calls < calls + 3:           # a few rounds, none fatal
                    await asyncio.sleep(0.001)
                assert not task.done()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            finally:
                store._client = live

    asyncio.run(body())


def test_run_publishes_refreshes_and_stops_when_cancelled(store_url: str) -> None:
    async def body() -> None:
        async with opened(store_url, prefix()) as store:
            exp = experiment("hero")
            await seed(store, "hero", "a", 200, 20)
            await seed(store, "hero", "b", 200, 60)
            loop = BanditLoop(store, defs(exp), clock=Clock(T0), interval=0.001)
            task = asyncio.create_task(loop.run())
            while "hero" not in loop.weights:
                assert not task.done()
                await asyncio.sleep(0.001)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert task.done()
            assert len(await log_of(store, "hero")) == 1

    asyncio.run(body())


def test_fixed_experiments_are_never_touched(store_url: str) -> None:
    async def body() -> None:
        async with opened(store_url, prefix()) as store:
            fixed = experiment("plain", allocation=Allocation.FIXED)
            bandit = experiment("hero")
            for exp_id in ("plain", "hero"):
                await seed(store, exp_id, "a", 200, 20)
                await seed(store, exp_id, "b", 200, 60)
            ks = store._keyspace
            event = WeightChange("plain", T0, (("a", 0.3), ("b", 0.7)))
            for command in ks.commands_for(event):
                await store.redis.execute_command(command.op, command.key, *command.args)
            loop = BanditLoop(store, defs(fixed, bandit),
                              clock=Clock(T0 + timedelta(seconds=CADENCE)))
            assert await loop.step() == ("hero",)
            await loop.refresh()
            assert set(loop.weights) == set(loop.periods) == {"hero"}
            assert len(await log_of(store, "plain")) == 1   # only the entry written here
            assert not await store.redis.exists(ks.bandit_lock("plain"))
            assert loop.describe("plain")["phase"] == "planned"
            assert loop.describe("plain")["weights"] is None

    asyncio.run(body())
