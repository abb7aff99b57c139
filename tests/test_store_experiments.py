"""Experiment counters against a real Valkey: events -> keys -> ExperimentCounts, exactly once.

The revenue case pins the point of ``value_sq_delta``: the store never sees visitors, yet the
sum of squares read back is over per-visitor totals (10 + 5 and 20 -> 15^2 + 20^2 = 625),
not over orders (10^2 + 5^2 + 20^2 = 525).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.crc import key_slot

from experiments.model import parse_experiment
from experiments.stats import ArmStats
from proxy.config import StoreConfig
from proxy.store import Store, StoreUnavailable
from proxy.store import batch as batches
from proxy.store import keys as keys_module
from proxy.store.client import connect
from proxy.store.embedded import _free_port
from proxy.store.events import Conversion, Exposure, Guardrail, WeightChange, period_id
from proxy.store.experiment_counts import (
    CountsReader,
    CovariateTotals,
    GoalTotals,
    GuardrailTotals,
    decode,
)
from proxy.store.keys import COUNTER_TTL, Command, Keyspace
from tests.store_fixtures import embedded_valkey, store_url

__all__ = ["embedded_valkey", "store_url"]  # fixtures, imported to be found by pytest

pytestmark = pytest.mark.timeout(20)
KS = Keyspace()
D1, D2 = "2026-11-22", "2026-11-23"
MANUAL = StoreConfig(socket_timeout=0.5, flush_interval=60)  # only explicit flush()
T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
HERO = parse_experiment({
    "id": "hero", "allocation": "bandit",
    "arms": [{"id": "control", "weight": 0.5}, {"id": "B", "weight": 0.5}],
    "goals": [{"id": "checkout", "kind": "page", "url": "/done", "primary": True},
              {"id": "revenue", "kind": "revenue", "event": "purchase"}]}, "test")


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


# -- events -> commands (no server) -----------------------------------------------------------

def test_each_event_becomes_documented_commands() -> None:
    units, days = "kairos:{exp:hero}:units:" + D1, "kairos:{exp:hero}:days"
    assert KS.commands_for(Exposure("hero", "B", D1, 0.25, "1795338000")) == (
        Command("HINCRBY", units, ("B", 1)),
        Command("HINCRBYFLOAT", units, ("B:inv_p", 4.0)),
        Command("HINCRBY", units, ("period:1795338000", 1)),
        Command("HINCRBY", days, (D1, 1)), Command("EXPIRE", days, (COUNTER_TTL,)),
        Command("EXPIRE", units, (COUNTER_TTL,)))
    goal = "kairos:{exp:hero}:goal:revenue:" + D1
    assert KS.commands_for(Conversion.revenue("hero", "revenue", "B", D1, 5.0, 10.0)) == (
        Command("HINCRBY", goal, ("B:n", 1)), Command("HINCRBYFLOAT", goal, ("B:sum", 5.0)),
        Command("HINCRBYFLOAT", goal, ("B:sumsq", 125.0)),  # (10 + 5)^2 - 10^2
        Command("HINCRBY", days, (D1, 0)), Command("EXPIRE", days, (COUNTER_TTL,)),
        Command("EXPIRE", goal, (COUNTER_TTL,)))
    guard = KS.commands_for(Guardrail("hero", "B", D1, 120.0, True, 5000))
    assert {c.args[0]: c.args[1] for c in guard if c.op.startswith("HINCRBY")
            and c.key.endswith(f"guardrails:{D1}")} == {
        "B:requests": 1, "B:latency_ms": 120.0, "B:latency_ms_sq": 14400.0, "B:errors": 1,
        "B:bytes": 5000}
    (push, trim, expire) = KS.commands_for(WeightChange("hero", T0, (("control", 0.3),
                                                                     ("B", 0.7))))
    assert push.op == "RPUSH" and push.key == "kairos:{exp:hero}:weights"
    assert json.loads(str(push.args[0])) == {"at": int(T0.timestamp()),
                                        "weights": {"control": 0.3, "B": 0.7}}
    assert trim == Command("LTRIM", push.key, (-keys_module.WEIGHT_LOG_CAP, -1))
    assert expire == Command("EXPIRE", push.key, (COUNTER_TTL,))
    assert Conversion.binary("hero", "checkout", "B", D1).value_sq_delta == 1.0


def test_the_covariate_adds_its_sums_and_nothing_without_one() -> None:
    units, goal = "kairos:{exp:hero}:units:" + D1, "kairos:{exp:hero}:goal:revenue:" + D1
    exposure = KS.commands_for(Exposure("hero", "B", D1, 0.5, covariate=3.0))
    assert [c for c in exposure if c.key == units and str(c.args[0]).startswith("B:x")] == [
        Command("HINCRBY", units, ("B:xn", 1)), Command("HINCRBYFLOAT", units, ("B:x", 3.0)),
        Command("HINCRBYFLOAT", units, ("B:xsq", 9.0))]
    conversion = KS.commands_for(Conversion.revenue("hero", "revenue", "B", D1, 5.0, 10.0,
                                                    covariate=3.0))
    assert Command("HINCRBYFLOAT", goal, ("B:xy", 15.0)) in conversion
    # without a covariate: exactly the commands of before
    assert not any(str(c.args[0]).startswith("B:x") for e in (
        Exposure("hero", "B", D1, 0.5), Conversion.binary("hero", "checkout", "B", D1))
        for c in KS.commands_for(e) if c.args)
    with pytest.raises(ValueError, match=r"Exposure\.covariate"):
        Exposure("hero", "B", D1, 0.5, covariate=float("inf"))


@pytest.mark.parametrize("make, message", [
    (lambda: Exposure("hero", "B", D1, 0.0), "probability"),
    (lambda: Exposure("hero", "B", "22.11.2026", 0.5), "Exposure.day"),
    (lambda: Conversion("hero", "g", "B", D1, float("nan")), "Conversion.value"),
    (lambda: Guardrail("hero", "B", D1, -1.0, False, 0), "must be >= 0"),
    (lambda: WeightChange("hero", datetime(2026, 11, 22), (("B", 1.0),)), "UTC offset"),
])
def test_bad_event_values_are_refused_with_the_field(make: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("day", ["2026-11-2x", "2026-11-222", "", 20261122, None, b"2026-11-22"])
def test_a_day_seen_valid_before_lets_no_bad_one_through(day: Any) -> None:
    """check_day remembers the days it found valid (one per page view's events): that
    memory must never let another value pass."""
    Exposure("hero", "B", D1, 0.5)
    with pytest.raises(ValueError, match=r"Exposure\.day"):
        Exposure("hero", "B", day, 0.5)


def test_the_memory_of_valid_days_stays_small() -> None:
    from proxy.store import events

    for offset in range(3 * events._VALID_DAYS_KEPT):
        day = (T0 + timedelta(days=offset)).date().isoformat()
        assert Exposure("hero", "B", day, 0.5).day == day
    assert len(events._VALID_DAYS) <= events._VALID_DAYS_KEPT


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True, "1", None])
def test_numbers_must_be_finite_and_not_booleans(value: Any) -> None:
    with pytest.raises(ValueError, match=r"Guardrail\.latency_ms"):
        Guardrail("hero", "B", D1, value, False, 0)
    assert Guardrail("hero", "B", D1, 3, False, 0).latency_ms == 3   # an int is a number


def test_bad_names_drop_the_event_in_the_flusher_and_pushes_keep_order() -> None:
    w1 = WeightChange("hero", T0, (("control", 0.5), ("B", 0.5)))
    w2 = WeightChange("hero", T0 + timedelta(hours=1), (("control", 0.2), ("B", 0.8)))
    events: list[Any] = [Exposure("hero", "a:b", D1, 0.5), w1, w2, w1,
                         Exposure("bad exp", "B", D1, 0.5)]
    batch, invalid = batches.build(events, KS, seq=1)
    assert invalid == 2 and batch.events == 3
    ops = [(c.op, c.key.rsplit(":", 1)[-1]) for c in batch.groups["exp:hero"]]
    assert ops == [("RPUSH", "weights"), ("RPUSH", "weights"), ("LTRIM", "weights"),
                   ("EXPIRE", "weights")]  # the repeated w1 is one entry: a fact, not a count
    assert json.loads(str(batch.groups["exp:hero"][1].args[0]))["weights"]["B"] == 0.8


# -- against a running server -----------------------------------------------------------------

def record_history(store: Store) -> None:
    """Two days of hero: control 3 visitors, B 4; a visitor of B buys twice across days."""
    p0, p1 = period_id(T0), period_id(T0 + timedelta(hours=12))
    store.record(WeightChange("hero", T0, (("control", 0.5), ("B", 0.5))))
    store.record(WeightChange("hero", T0 + timedelta(hours=12), (("control", 0.4),
                                                                 ("B", 0.6))))
    for arm, day, period, p in [("control", D1, p0, 0.5), ("control", D1, p0, 0.5),
                                ("B", D1, p0, 0.5), ("B", D1, p0, 0.5),
                                ("control", D2, p1, 0.4), ("B", D2, p1, 0.6),
                                ("B", D2, p1, 0.6)]:
        store.record(Exposure("hero", arm, day, p, period))
    store.record(Conversion.binary("hero", "checkout", "B", D1))
    store.record(Conversion.binary("hero", "checkout", "B", D2))
    store.record(Conversion.binary("hero", "checkout", "control", D2))
    store.record(Conversion.revenue("hero", "revenue", "B", D1, 10.0, 0.0))   # visitor 1
    store.record(Conversion.revenue("hero", "revenue", "B", D2, 5.0, 10.0))   # visitor 1 again
    store.record(Conversion.revenue("hero", "revenue", "B", D2, 20.0, 0.0))   # visitor 2
    store.record(Conversion.revenue("hero", "revenue", "control", D2, 7.5, 0.0))
    store.record(Guardrail("hero", "B", D1, 100.0, False, 2000))
    store.record(Guardrail("hero", "B", D2, 300.0, True, 1000))


def test_counts_read_back_exactly(store_url: str) -> None:
    async def body() -> None:
        store = await Store.open(MANUAL, store_url)
        record_history(store)
        assert await store.flush()
        counts = await CountsReader.of(store).read(HERO)
        assert [d.day for d in counts.days] == [D1, D2]
        assert [dict(d.units) for d in counts.days] == [{"control": 2, "B": 2},
                                                        {"control": 1, "B": 2}]
        assert counts.days[1].inverse_p["B"] == pytest.approx(2 / 0.6)
        assert counts.cumulative() == {
            "control": {"checkout": ArmStats(3, 1.0, 1.0), "revenue": ArmStats(3, 7.5, 56.25)},
            "B": {"checkout": ArmStats(4, 2.0, 2.0), "revenue": ArmStats(4, 35.0, 625.0)}}
        (_, first), (_, second) = counts.series("revenue")
        assert first == {"control": ArmStats(2), "B": ArmStats(2, 10.0, 100.0)}
        assert second == {"control": ArmStats(3, 7.5, 56.25), "B": ArmStats(4, 35.0, 625.0)}
        assert counts.goal_totals("revenue")["B"] == GoalTotals(3, 35.0, 625.0)
        assert counts.guardrail_totals()["B"] == GuardrailTotals(2, 400.0, 100_000.0, 1, 3000)
        assert [p.weights for p in counts.weights.periods] == [(0.5, 0.5), (0.4, 0.6)]
        assert counts.units_by_period() == (4, 3)
        assert counts.ignored == ()
        for key in (KS.units("hero", D1), KS.goal("hero", "revenue", D2),
                    KS.guardrails("hero", D1), KS.experiment_days("hero"), KS.weights("hero")):
            assert COUNTER_TTL - 10 < await store.redis.ttl(key) <= COUNTER_TTL, key
        await store.close()

    run(body())


def test_covariate_sums_read_back_exactly(store_url: str) -> None:
    """Previous visits x: control 0 and 2 (the latter buys 10), B 1, 3 and one exposed
    before covariates were recorded (no x; buys 20); B's x = 3 visitor buys 10 + 5 over two
    days and converts. sum_xy is over visitors: 3 * 15 for B's revenue."""
    async def body() -> None:
        store = await Store.open(MANUAL, store_url)
        record_history(store)   # earlier data without covariates: x counts as 0 there
        for arm, day, x in [("control", D1, 0.0), ("control", D2, 2.0), ("B", D1, 1.0),
                            ("B", D1, 3.0)]:
            store.record(Exposure("hero", arm, day, 0.5, covariate=x))
        store.record(Exposure("hero", "B", D2, 0.5))
        store.record(Conversion.revenue("hero", "revenue", "control", D2, 10.0, 0.0, 2.0))
        store.record(Conversion.revenue("hero", "revenue", "B", D1, 10.0, 0.0, 3.0))
        store.record(Conversion.revenue("hero", "revenue", "B", D2, 5.0, 10.0, 3.0))
        store.record(Conversion.revenue("hero", "revenue", "B", D2, 20.0, 0.0))
        store.record(Conversion.binary("hero", "checkout", "B", D2, 3.0))
        assert await store.flush()
        counts = await CountsReader.of(store).read(HERO)
        assert counts.has_covariate and counts.ignored == ()
        assert counts.days[0].covariates == {"control": CovariateTotals(1, 0.0, 0.0),
                                             "B": CovariateTotals(2, 4.0, 10.0)}
        assert counts.covariate_totals() == {"control": CovariateTotals(2, 2.0, 4.0),
                                             "B": CovariateTotals(2, 4.0, 10.0)}
        assert counts.goal_totals("revenue")["B"].sum_xy == 45.0
        assert counts.goal_totals("checkout")["B"].sum_xy == 3.0
        covariates = counts.covariates()
        assert covariates is not None
        assert covariates["B"].x == ArmStats(4 + 3, 4.0, 10.0) and covariates["B"].known == 2
        assert covariates["B"].sum_xy == {"checkout": 3.0, "revenue": 45.0}
        assert covariates["control"].x == ArmStats(3 + 2, 2.0, 4.0)
        assert covariates["control"].sum_xy == {"checkout": 0.0, "revenue": 20.0}
        await store.close()

    run(body())


def test_counts_without_a_covariate_have_none() -> None:
    counts = decode(HERO, [D1], [{b"control": b"2", b"B": b"1"}, {},
                                 {b"B:n": b"1", b"B:sum": b"1", b"B:sumsq": b"1"}, {}, []])
    assert not counts.has_covariate and counts.covariates() is None
    assert counts.goal_totals("checkout")["B"] == GoalTotals(1, 1.0, 1.0, 0.0)
    assert counts.days[0].covariates == {}


def test_a_window_reads_its_days_and_names_a_contradiction(store_url: str) -> None:
    async def body() -> None:
        store = await Store.open(MANUAL, store_url)
        record_history(store)
        assert await store.flush()
        reader = CountsReader.of(store)
        assert [d.day for d in (await reader.read(HERO, until=D1)).days] == [D1]
        late = await reader.read(HERO, since=D2)
        assert late.units() == {"control": 1, "B": 2}
        # D2 alone counts the returning buyer's delta (125), not 15^2: an approximation
        # the statistics accept; a window with conversions and no units cannot be, and
        # must fail loudly saying why.
        assert late.cumulative()["B"]["revenue"] == ArmStats(2, 25.0, 525.0)
        store.record(Conversion.binary("hero", "checkout", "B", "2026-11-24"))
        assert await store.flush()
        empty = await reader.read(HERO, since="2026-11-24")
        with pytest.raises(ValueError, match="window that starts after"):
            empty.cumulative()
        await store.close()

    run(body())


def test_weight_log_is_capped_and_a_replayed_batch_pushes_once(
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys_module, "WEIGHT_LOG_CAP", 3)

    async def body() -> None:
        client = connect(store_url, timeout=0.5)
        changes = [WeightChange("hero", T0 + timedelta(minutes=15 * i),
                                (("control", 1 - i / 10), ("B", i / 10))) for i in range(5)]
        batch, _ = batches.build([*changes, Exposure("hero", "B", D1, 0.5)], KS, seq=1)
        assert (await batches.apply(client, batch, KS, "w1")).replayed_groups == 0
        assert (await batches.apply(client, batch, KS, "w1")).replayed_groups == 1
        counts = await CountsReader(client).read(HERO)
        assert [p.weights[1] for p in counts.weights.periods] == [0.2, 0.3, 0.4]
        assert counts.units() == {"control": 0, "B": 1}
        await client.aclose()

    run(body())


def test_units_without_a_period_or_with_a_forgotten_one_give_no_period_counts() -> None:
    base = [{b"control": b"1", b"period:100": b"1"}, {}, {}, {}]
    log = [json.dumps({"at": 100, "weights": {"control": 0.5, "B": 0.5}}).encode()]
    assert decode(HERO, [D1], [*base, log]).units_by_period() == (1,)
    untagged = [{b"control": b"2", b"period:100": b"1"}, {}, {}, {}]
    assert decode(HERO, [D1], [*untagged, log]).units_by_period() is None
    assert decode(HERO, [D1], [*base, []]).units_by_period() is None


def test_decode_skips_what_does_not_fit_and_says_so() -> None:
    units = {b"control": b"2", b"old-arm": b"5", b"old-arm:inv_p": b"10"}
    log = [b"not json",
           json.dumps({"at": 200, "weights": {"control": 0.5, "gone": 0.5}}).encode(),
           json.dumps({"at": 100, "weights": {"control": 0.5, "B": 0.5}}).encode(),
           json.dumps({"at": 50, "weights": {"control": 0.9, "B": 0.1}}).encode()]
    counts = decode(HERO, [D1], [units, {}, {}, {}, log])
    assert counts.units() == {"control": 2, "B": 0}
    assert counts.period_ids == ("100",)
    assert counts.ignored[0] == "arm 'old-arm' (not in the definition)"
    assert [item.split(" (")[0] for item in counts.ignored[1:]] == [
        "weight log entry 0", "weight log entry 1", "weight log entry 3"]


def test_reading_from_a_store_that_is_down_raises_one_error_type() -> None:
    async def body() -> None:
        client = connect(f"redis://127.0.0.1:{_free_port()}", timeout=0.3)
        with pytest.raises(StoreUnavailable, match=r"experiment 'hero'.*cannot connect"):
            await CountsReader(client, where="test store").read(HERO)
        await client.aclose()

    run(body())


def test_counts_of_one_experiment_share_one_cluster_slot() -> None:
    keys = (KS.units("hero", D1), KS.goal("hero", "checkout", D1), KS.guardrails("hero", D1),
            KS.weights("hero"), KS.experiment_days("hero"), KS.applied("exp:hero", "w"))
    assert len({key_slot(key.encode()) for key in keys}) == 1


def test_guardrails_added_up_before_the_batch_give_the_counts_of_one_command_each() -> None:
    """The flusher sums the guardrails of an arm and day before making commands (every page
    view makes one, nearly all different); the batch must say what seven commands per event,
    merged, would have said."""
    events: list[Any] = [Guardrail("hero", "AB"[i % 2], (D1, D2)[i % 3 == 0],
                                   round(0.37 * i, 3), i % 7 == 0, 1000 + i) for i in range(200)]
    events += events[:30]                                   # equal events, counted by Counter
    events.append(Exposure("hero", "B", D1, 0.5))
    batch, invalid = batches.build(events, KS, 1)
    assert invalid == 0 and batch.events == len(events)
    one_by_one = batches.merge((c, 1) for e in events for c in KS.commands_for(e))

    def totals(commands: Any) -> dict[tuple[str, str, str], float]:
        return {(c.op, c.key, str(c.args[0]) if len(c.args) > 1 else ""): c.args[-1]
                for c in commands}

    got = totals(c for group in batch.groups.values() for c in group)
    want = totals(one_by_one)
    assert got.keys() == want.keys()
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-12), name
