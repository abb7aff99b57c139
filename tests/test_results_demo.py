"""Demo history: reproducible from its seed, dated from the ``today`` it is given, written
once, and plausible enough that the results show a trustworthy decision (no false sample
ratio alarm, even for a bandit whose weights change every day)."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime

import numpy as np
import pytest
from redis.asyncio import Redis

from experiments.model import parse_experiment
from proxy.experiment_runtime import COVARIATE_CAP
from proxy.results.demo import seed_demo_history, seed_url, simulate
from proxy.results.summary import build_report
from proxy.store.events import Conversion, Exposure, WeightChange
from proxy.store.experiment_counts import CountsReader
from tests.store_fixtures import embedded_valkey, store_url

__all__ = ["embedded_valkey", "store_url"]  # fixtures, imported to be found by pytest

pytestmark = pytest.mark.timeout(60)
TODAY = date(2026, 11, 22)
HERO = parse_experiment({
    "id": "hero", "arms": [{"id": "control", "weight": 0.5}, {"id": "B", "weight": 0.5}],
    "goals": [{"id": "checkout", "kind": "page", "url": "/done", "primary": True},
              {"id": "revenue", "kind": "revenue", "event": "buy"}]}, "test")
BANNER = parse_experiment({
    "id": "banner", "allocation": "bandit",
    "arms": [{"id": "control", "weight": 0.34}, {"id": "green", "weight": 0.33},
             {"id": "red", "weight": 0.33}],
    "goals": [{"id": "click", "kind": "click", "selector": "a", "primary": True}]}, "test")


def test_same_seed_same_history_and_days_count_back_from_today() -> None:
    first = simulate(HERO, today=TODAY, days=3, seed=1, visitors_per_day=200)
    assert first == simulate(HERO, today=TODAY, days=3, seed=1, visitors_per_day=200)
    assert first != simulate(HERO, today=TODAY, days=3, seed=2, visitors_per_day=200)
    days = sorted({e.day for e in first if isinstance(e, Exposure)})
    assert days == ["2026-11-19", "2026-11-20", "2026-11-21"]  # today is left to live traffic


def test_visitors_carry_previous_visits_that_go_with_converting() -> None:
    events = simulate(HERO, today=TODAY, days=7, seed=4, visitors_per_day=1000)
    exposures = [e for e in events if isinstance(e, Exposure)]
    xs = np.array([e.covariate for e in exposures], dtype=float)
    assert 0.3 < np.mean(xs > 0) < 0.6 and xs.max() <= COVARIATE_CAP
    buyers = [e.covariate for e in events if isinstance(e, Conversion)
              and e.goal == "checkout"]
    assert np.mean(buyers) > 1.5 * np.mean(xs)   # returning visitors convert more


def test_bandit_history_records_one_weight_change_a_day_and_tags_exposures() -> None:
    events = simulate(BANNER, today=TODAY, days=5, seed=3, visitors_per_day=300)
    changes = [e for e in events if isinstance(e, WeightChange)]
    assert [c.at.day for c in changes] == [17, 18, 19, 20, 21]
    assert all(abs(sum(w for _, w in c.weights) - 1) < 1e-9 for c in changes)
    periods = {e.period for e in events if isinstance(e, Exposure)}
    assert len(periods) == 5 and "" not in periods


def test_seeding_writes_once_and_reads_back_as_trustworthy_results(store_url: str) -> None:
    async def body() -> None:
        client = Redis.from_url(store_url)
        assert await seed_demo_history(client, [HERO, BANNER], today=TODAY, days=10,
                                       visitors_per_day=800) == ["hero", "banner"]
        assert await seed_demo_history(client, [HERO, BANNER], today=TODAY) == []
        reader = CountsReader(client)
        for experiment in (HERO, BANNER):
            counts = await reader.read(experiment)
            assert [d.day for d in counts.days][-1] == "2026-11-21" and len(counts.days) == 10
            report = build_report(experiment, counts, datetime(2026, 11, 22, tzinfo=UTC))
            assert report.result is not None, report.problem
            assert report.decision_kind != "sample_ratio_mismatch", report.decision_text
            assert report.warnings == ()
            # returning visitors convert more: CUPED with previous visits reduces variance
            adjusted = [c.cuped for c in report.result.comparisons]
            assert all(a is not None and a.coverage == 1.0 for a in adjusted)
            assert all(a.variance_reduction > 0.01 for a in adjusted if a is not None)
        assert len((await reader.read(BANNER)).weights.periods) == 10
        await client.aclose()

    asyncio.run(body())


def test_a_synchronous_caller_seeds_by_url(store_url: str) -> None:
    assert seed_url(store_url, [HERO], today=TODAY, days=2, visitors_per_day=50) == ["hero"]
    assert seed_url(store_url, [HERO], today=TODAY) == []
