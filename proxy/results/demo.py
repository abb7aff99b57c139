"""Simulated history for the demo, so the results page has something to show on first start.

:func:`simulate` is pure and reproducible: a seeded numpy generator, days counted back from
the ``today`` it is given (no clock). Traffic dips at weekends; each treatment gets a lift
drawn once from the seed (the first treatment wins clearly,
so the demo shows a decision); revenue is lognormal per order with some repeat buyers (so the sum
of squares really is over per-visitor totals); bandits recompute their weights every midnight
with the real :func:`experiments.bandit.compute_weights`. The events are the ones the proxy
records, written through the store's own batches, so the demo exercises the real keys.

Visitors are simulated one by one with the CUPED covariate the proxy records, their previous
visits (x): 45% are returning visitors, with a geometric number of earlier visits, and
propensity to convert and buy grows with x (up to 6 visits). So, as on a real shop, the
results show a CUPED variance reduction: small on a rare conversion, larger on frequent ones.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np

from experiments.bandit import compute_weights
from experiments.model import Allocation, Experiment
from experiments.stats import ArmStats
from proxy.experiment_runtime import COVARIATE_CAP
from proxy.store import batch as batches
from proxy.store.events import (
    Conversion,
    Event,
    Exposure,
    Guardrail,
    WeightChange,
    period_id,
)
from proxy.store.experiment_counts import CountsReader
from proxy.store.keys import Keyspace

CHUNK = 5_000  # events per batch, as the store's flusher takes them
RETURNING = 0.45      # share of visitors with earlier visits
REVISIT = 0.3         # earlier visits of a returning visitor ~ Geometric(REVISIT), >= 1
# Propensity of a visitor with x earlier visits, relative to the average visitor:
# (0.25 + min(x, 6)) / E[0.25 + min(x, 6)], where E[min(G, 6)] = sum_{k<6} (1 - REVISIT)^k.
_PROPENSITY_MEAN = 0.25 + RETURNING * (1 - (1 - REVISIT) ** 6) / REVISIT


def simulate(experiment: Experiment, *, today: date, days: int = 14, seed: int = 2026,
             visitors_per_day: int = 1200) -> list[Event]:
    """The events of ``days`` days before ``today`` (today itself is left to live traffic)."""
    rng = np.random.default_rng(seed)
    arms = [arm.id for arm in experiment.arms]
    # The first treatment wins clearly (the demo should show a decision), the others barely.
    lifts = [0.0, *(rng.normal(0.30 if k == 1 else 0.03, 0.04) for k in range(1, len(arms)))]
    weights = list(experiment.weights)
    primary = experiment.primary_goal
    seen = [ArmStats(0)] * len(arms)
    buyers = [0] * len(arms)
    events: list[Event] = []
    for offset in range(days, 0, -1):
        day = today - timedelta(days=offset)
        text = day.isoformat()
        period = ""
        if experiment.allocation is Allocation.BANDIT:
            if offset != days:
                weights = list(compute_weights(
                    seen, planned=experiment.weights, settings=experiment.bandit,
                    binary=primary.binary,
                    conversions=None if primary.binary else buyers).weights)
            at = datetime(day.year, day.month, day.day, tzinfo=UTC)
            events.append(WeightChange(experiment.id, at, tuple(zip(arms, weights,
                                                                    strict=True))))
            period = period_id(at)
        weekend = 0.75 if day.weekday() >= 5 else 1.0
        units = rng.multinomial(rng.poisson(visitors_per_day * weekend), weights)
        for k, arm in enumerate(arms):
            n = int(units[k])
            if n == 0:
                continue  # a weight of 0 (or bad luck): no exposure, nothing to convert
            visits = previous_visits(rng, n)
            propensity = (0.25 + np.minimum(visits, 6.0)) / _PROPENSITY_MEAN
            events += [Exposure(experiment.id, arm, text, weights[k], period, x)
                       for x in visits.tolist()]
            for goal in experiment.goals:
                lift = lifts[k] if goal.primary else lifts[k] / 3
                if goal.binary:
                    rate = (0.045 if goal.primary else 0.16) * (1 + lift)
                    converted = rng.random(n) < np.minimum(rate * propensity, 1.0)
                    events += [Conversion.binary(experiment.id, goal.id, arm, text, x)
                               for x in visits[converted].tolist()]
                    if goal is primary:
                        c = float(converted.sum())
                        seen[k] = seen[k] + ArmStats(n, c, c)
                else:
                    totals = _revenue(events, rng, experiment.id, goal.id, arm, text, visits,
                                      propensity, lift)
                    if goal is primary:
                        s = float(sum(totals))
                        seen[k] = seen[k] + ArmStats(n, s, float(sum(t * t for t in totals)))
                        buyers[k] += len(totals)
            events += _guardrails(rng, experiment.id, arm, text, n)
    return events


def previous_visits(rng: np.random.Generator, n: int) -> np.ndarray:
    """x of ``n`` visitors: 0 for first-time visitors, Geometric(REVISIT) for returning ones,
    capped as the proxy caps it."""
    returning = rng.random(n) < RETURNING
    visits = np.where(returning, rng.geometric(REVISIT, n), 0)
    return np.minimum(visits, COVARIATE_CAP).astype(float)


def _revenue(events: list[Event], rng: np.random.Generator, experiment: str, goal: str,
             arm: str, day: str, visits: np.ndarray, propensity: np.ndarray,
             lift: float) -> list[float]:
    """Orders of the visitors who buy; returns each buyer's total."""
    totals = []
    buys = rng.random(len(visits)) < np.minimum(0.03 * (1 + lift) * propensity, 1.0)
    for x in visits[buys].tolist():
        total = 0.0
        for _ in range(1 + int(rng.random() < 0.2)):  # one buyer in five comes back
            value = round(float(rng.lognormal(3.6, 0.5)), 2)
            events.append(Conversion.revenue(experiment, goal, arm, day, value, total, x))
            total += value
        totals.append(total)
    return totals


def _guardrails(rng: np.random.Generator, experiment: str, arm: str, day: str,
                n: int) -> list[Event]:
    latency = rng.gamma(4.0, 30.0, n).round()
    size = rng.normal(48_000, 6_000, n).clip(10_000).astype(int)
    errors = rng.random(n) < 0.002
    return [Guardrail(experiment, arm, day, float(latency[i]), bool(errors[i]), int(size[i]))
            for i in range(n)]


async def seed_demo_history(target: Any, experiments: Sequence[Experiment], *, today: date,
                            days: int = 14, seed: int = 2026,
                            visitors_per_day: int = 1200) -> list[str]:
    """Write simulated history for each experiment that has no counts yet; return the ids
    seeded. ``target`` is a running Store or an asyncio Redis client (default key prefix).
    Experiments with counts are left alone, so starting the demo twice seeds once."""
    reader = target if isinstance(target, CountsReader) else (
        CountsReader.of(target) if hasattr(target, "record") else CountsReader(target))
    seeded = []
    for i, experiment in enumerate(experiments):
        if await reader.days(experiment.id):
            continue
        events = simulate(experiment, today=today, days=days, seed=seed + i,
                          visitors_per_day=visitors_per_day)
        await _write(reader.client, reader.keyspace, events)
        seeded.append(experiment.id)
    return seeded


def seed_url(url: str, experiments: Sequence[Experiment], *, today: date,
             **options: Any) -> list[str]:
    """:func:`seed_demo_history` for a synchronous caller (``kairos demo`` before uvicorn
    starts): opens a client on ``url``, seeds, closes."""
    from proxy.store.client import connect

    async def run() -> list[str]:
        # A one-off bulk write before the proxy starts, not the request path: a machine
        # busy enough to stall one batch past 5 s once cost the demo its history.
        client = connect(url, timeout=30.0)
        try:
            return await seed_demo_history(client, experiments, today=today, **options)
        finally:
            await client.aclose()

    return asyncio.run(run())


async def _write(client: Any, keyspace: Keyspace, events: list[Event]) -> None:
    writer = f"demo-{uuid.uuid4().hex[:12]}"
    for seq, start in enumerate(range(0, len(events), CHUNK), start=1):
        batch, invalid = batches.build(events[start:start + CHUNK], keyspace, seq)
        if invalid:
            raise ValueError(f"demo history: {invalid} simulated events cannot be counted")
        await batches.apply(client, batch, keyspace, writer)
