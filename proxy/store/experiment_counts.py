"""Reading one experiment's counts back: daily series per arm and goal, and the weight log.

For results pages, ``kairos results`` and the bandit's weight updates: background and admin
use only, never the request path (a read is one pipelined round trip per experiment, over
every day it has data for). Redis failures become :class:`StoreUnavailable`.

What the counts mean (KEYSPACE.md has the keys): ``units`` are visitors first exposed on a
day; a goal's ``sum`` and ``sum_squares`` are added on the day of each conversion, and the
sum of squares arrives as telescoping deltas of per-visitor totals. So one day's numbers are
not an :class:`ArmStats` of that day's visitors (a visitor exposed on Monday may buy on
Tuesday); cumulative numbers from the first day are, exactly: :meth:`cumulative` and
:meth:`series` give those.

For CUPED the units hash also holds, per arm, how many units came with a pre-exposure
covariate x and the sums of x and x^2, and each goal hash the sum of x * value
(:meth:`ExperimentCounts.covariates` turns them into what ``summarise`` takes). Absent
fields mean no covariate was recorded (data older than covariates, segment exposures).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from experiments.history import WeightHistory
from experiments.model import Experiment
from experiments.stats import ArmStats
from proxy.store.client import StoreClient, translated
from proxy.store.keys import (
    COVARIATE_SQ,
    COVARIATE_SUM,
    COVARIATE_UNITS,
    COVARIATE_XY,
    INVERSE_P,
    PERIOD_FIELD,
    Keyspace,
)

log = logging.getLogger("kairos.store")


@dataclass(frozen=True, slots=True)
class GoalTotals:
    """One goal, one arm, one day: conversion events, sum of values, sum of square deltas,
    and sum of covariate x * value (0 where no conversion carried x)."""

    conversions: int = 0
    sum: float = 0.0
    sum_squares: float = 0.0
    sum_xy: float = 0.0

    def __add__(self, other: GoalTotals) -> GoalTotals:
        return GoalTotals(self.conversions + other.conversions, self.sum + other.sum,
                          self.sum_squares + other.sum_squares, self.sum_xy + other.sum_xy)


@dataclass(frozen=True, slots=True)
class CovariateTotals:
    """One arm, one day: units exposed with a known covariate x, sum of x, sum of x^2."""

    units: int = 0
    sum: float = 0.0
    sum_squares: float = 0.0

    def __add__(self, other: CovariateTotals) -> CovariateTotals:
        return CovariateTotals(self.units + other.units, self.sum + other.sum,
                               self.sum_squares + other.sum_squares)


@dataclass(frozen=True, slots=True)
class GuardrailTotals:
    """Pages served to one arm: requests, latency sum and sum of squares (ms), 5xx, bytes."""

    requests: int = 0
    latency_ms: float = 0.0
    latency_ms_sq: float = 0.0
    errors: int = 0
    bytes: int = 0

    def __add__(self, other: GuardrailTotals) -> GuardrailTotals:
        return GuardrailTotals(*(a + b for a, b in zip(_fields(self), _fields(other),
                                                       strict=True)))


def _fields(totals: GuardrailTotals) -> tuple[Any, ...]:
    return (totals.requests, totals.latency_ms, totals.latency_ms_sq, totals.errors,
            totals.bytes)


@dataclass(frozen=True, slots=True)
class DayCounts:
    """Everything counted on one UTC day; arms and goals absent had nothing."""

    day: str
    units: Mapping[str, int]                           # arm -> visitors first exposed
    inverse_p: Mapping[str, float]                     # arm -> sum of 1 / probability
    periods: Mapping[str, int]                         # weight period id -> units, all arms
    goals: Mapping[str, Mapping[str, GoalTotals]]      # goal -> arm -> totals
    guardrails: Mapping[str, GuardrailTotals]          # arm -> totals
    covariates: Mapping[str, CovariateTotals] = field(default_factory=dict)  # arm -> x sums


@dataclass(frozen=True, slots=True)
class ExperimentCounts:
    """One experiment's days in order, restricted to the arms and goals of its definition."""

    experiment: str
    arms: tuple[str, ...]
    goals: tuple[str, ...]
    days: tuple[DayCounts, ...]
    weights: WeightHistory                 # bandit weight changes, arms in ``arms`` order
    period_ids: tuple[str, ...] = ()       # the id of each period of ``weights``
    ignored: tuple[str, ...] = field(default=())  # what was found but does not fit (why)

    def units(self) -> dict[str, int]:
        return {arm: sum(d.units.get(arm, 0) for d in self.days) for arm in self.arms}

    def goal_totals(self, goal: str) -> dict[str, GoalTotals]:
        out = {arm: GoalTotals() for arm in self.arms}
        for d in self.days:
            for arm, totals in d.goals.get(goal, {}).items():
                out[arm] = out[arm] + totals
        return out

    def covariate_totals(self) -> dict[str, CovariateTotals]:
        out = {arm: CovariateTotals() for arm in self.arms}
        for d in self.days:
            for arm, totals in d.covariates.items():
                out[arm] = out[arm] + totals
        return out

    @property
    def has_covariate(self) -> bool:
        """Whether any exposure in these days carried a covariate."""
        return any(d.covariates for d in self.days)

    def covariates(self) -> dict[str, Any] | None:   # arm -> experiments.results.Covariate
        """arm -> CUPED covariate over all days (``summarise(covariates=...)``); None when no
        exposure carried one. Units exposed without x count as x = 0 (their conversions
        carried none either, so their x * y is 0 too): a fixed pre-exposure function of the
        unit, which keeps the adjustment unbiased; ``known`` says how many had a real x."""
        if not self.has_covariate:
            return None
        units, xs = self.units(), self.covariate_totals()
        out = {}
        for arm in self.arms:
            x = xs[arm]
            where = f"{self.experiment}: arm {arm!r}, covariate"
            try:
                stats = ArmStats(units[arm], x.sum, x.sum_squares)
            except ValueError as exc:
                raise ValueError(f"{where}: {units[arm]} units do not fit {x.units} units "
                                 f"with a covariate ({exc})") from None
            if x.units > units[arm]:
                raise ValueError(f"{where}: {x.units} units with a covariate but only "
                                 f"{units[arm]} units")
            out[arm] = _covariate(stats, {goal: self.goal_totals(goal)[arm].sum_xy
                                         for goal in self.goals}, x.units)
        return out

    def guardrail_totals(self) -> dict[str, GuardrailTotals]:
        out = {arm: GuardrailTotals() for arm in self.arms}
        for d in self.days:
            for arm, totals in d.guardrails.items():
                out[arm] = out[arm] + totals
        return out

    def cumulative(self) -> dict[str, dict[str, ArmStats]]:
        """arm -> goal -> ArmStats over all days: the input of ``experiments.results.summarise``.

        Raises ValueError (from ArmStats) when the numbers contradict each other, which a
        window starting after the first day can cause (visitors exposed before it converting
        inside it); the message says which arm and goal.
        """
        units = self.units()
        out: dict[str, dict[str, ArmStats]] = {arm: {} for arm in self.arms}
        for goal in self.goals:
            for arm, t in self.goal_totals(goal).items():
                out[arm][goal] = _stats(units[arm], t, f"{self.experiment}: arm {arm!r}, "
                                        f"goal {goal!r}")
        return out

    def series(self, goal: str) -> tuple[tuple[str, dict[str, ArmStats]], ...]:
        """(day, arm -> cumulative ArmStats up to and including that day), day by day."""
        units = dict.fromkeys(self.arms, 0)
        totals = {arm: GoalTotals() for arm in self.arms}
        out = []
        for d in self.days:
            for arm in self.arms:
                units[arm] += d.units.get(arm, 0)
                totals[arm] = totals[arm] + d.goals.get(goal, {}).get(arm, GoalTotals())
            out.append((d.day, {arm: _stats(units[arm], totals[arm],
                                            f"{self.experiment}: arm {arm!r}, goal {goal!r} "
                                            f"up to {d.day}") for arm in self.arms}))
        return tuple(out)

    def units_by_period(self) -> tuple[int, ...] | None:
        """Units (all arms) that entered in each weight period, for the sample-ratio check;
        None when some units carry no period, or a period the capped log no longer has."""
        counted = {pid: 0 for pid in self.period_ids}
        for d in self.days:
            for pid, n in d.periods.items():
                if pid not in counted:
                    return None
                counted[pid] += n
        if sum(counted.values()) != sum(self.units().values()):
            return None
        return tuple(counted[pid] for pid in self.period_ids)


def _stats(n: int, totals: GoalTotals, where: str) -> ArmStats:
    try:
        return ArmStats(n, totals.sum, totals.sum_squares)
    except ValueError as exc:
        raise ValueError(f"{where}: {n} units do not fit {totals.conversions} conversions "
                         f"({exc}); a window that starts after the experiment's first day "
                         "counts conversions of visitors exposed before it") from None


@dataclass(frozen=True, slots=True)
class CountsReader:
    """Reads counts with ``client`` under ``keyspace``; ``where`` names the store in errors."""

    client: StoreClient
    keyspace: Keyspace = field(default_factory=Keyspace)
    where: str = "the store"

    @classmethod
    def of(cls, store: Any) -> CountsReader:
        """The reader of a running :class:`proxy.store.Store` (same client and prefix)."""
        return cls(store.redis, store._keyspace, store._where)

    async def days(self, experiment: str) -> tuple[str, ...]:
        """The UTC days ``experiment`` has any count for, oldest first."""
        with translated(f"reading the days of experiment {experiment!r} from {self.where}"):
            raw = await self.client.hkeys(self.keyspace.experiment_days(experiment))
        return tuple(sorted(_text(d) for d in raw))

    async def read(self, experiment: Experiment, *, since: str | None = None,
                   until: str | None = None) -> ExperimentCounts:
        """Counts of ``experiment`` from ``since`` to ``until`` (UTC days, inclusive)."""
        ks, exp = self.keyspace, experiment.id
        days = [d for d in await self.days(exp) if (since is None or d >= since)
                and (until is None or d <= until)]
        with translated(f"reading the counts of experiment {exp!r} from {self.where}"):
            async with self.client.pipeline(transaction=False) as pipe:
                for day in days:
                    pipe.hgetall(ks.units(exp, day))
                    pipe.hgetall(ks.guardrails(exp, day))
                    for goal in experiment.goals:
                        pipe.hgetall(ks.goal(exp, goal.id, day))
                pipe.lrange(ks.weights(exp), 0, -1)
                replies = await pipe.execute()
        return decode(experiment, days, replies)


def decode(experiment: Experiment, days: Sequence[str],
           replies: Sequence[Any]) -> ExperimentCounts:
    """Pure: the pipeline's replies (in :meth:`CountsReader.read`'s order) as counts."""
    arms = tuple(arm.id for arm in experiment.arms)
    goals = tuple(goal.id for goal in experiment.goals)
    ignored: set[str] = set()
    out, i = [], 0
    for day in days:
        units, guard = _hash(replies[i]), _hash(replies[i + 1])
        goal_hashes = [_hash(r) for r in replies[i + 2:i + 2 + len(goals)]]
        i += 2 + len(goals)
        out.append(DayCounts(
            day=day,
            units={a: int(units[a]) for a in arms if a in units},
            inverse_p={a: float(units[f"{a}:{INVERSE_P}"]) for a in arms
                       if f"{a}:{INVERSE_P}" in units},
            periods={k[len(PERIOD_FIELD):]: int(v) for k, v in units.items()
                     if k.startswith(PERIOD_FIELD)},
            goals={g: _goal_totals(h, arms) for g, h in zip(goals, goal_hashes, strict=True)},
            guardrails=_guardrails(guard, arms),
            covariates=_covariates(units, arms),
        ))
        ignored.update(f"arm {k.partition(':')[0]!r} (not in the definition)"
                       for h in (units, guard, *goal_hashes) for k in h
                       if not k.startswith(PERIOD_FIELD) and k.partition(":")[0] not in arms)
    history, period_ids, skipped = _weights(replies[i], arms, experiment.id)
    return ExperimentCounts(experiment.id, arms, goals, tuple(out), history, period_ids,
                            tuple(sorted(ignored)) + skipped)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _hash(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


def _goal_totals(h: Mapping[str, str], arms: tuple[str, ...]) -> dict[str, GoalTotals]:
    return {a: GoalTotals(int(h.get(f"{a}:n", 0)), float(h.get(f"{a}:sum", 0.0)),
                          float(h.get(f"{a}:sumsq", 0.0)),
                          float(h.get(f"{a}:{COVARIATE_XY}", 0.0)))
            for a in arms if f"{a}:n" in h}


def _covariate(*args: Any, **kwargs: Any) -> Any:
    """experiments.results.Covariate, imported when first read (the results load scipy;
    a proxy worker that only counts never does)."""
    from experiments.results import Covariate
    return Covariate(*args, **kwargs)


def _covariates(h: Mapping[str, str], arms: tuple[str, ...]) -> dict[str, CovariateTotals]:
    return {a: CovariateTotals(int(h[f"{a}:{COVARIATE_UNITS}"]),
                               float(h.get(f"{a}:{COVARIATE_SUM}", 0.0)),
                               float(h.get(f"{a}:{COVARIATE_SQ}", 0.0)))
            for a in arms if f"{a}:{COVARIATE_UNITS}" in h}


def _guardrails(h: Mapping[str, str], arms: tuple[str, ...]) -> dict[str, GuardrailTotals]:
    return {a: GuardrailTotals(int(h.get(f"{a}:requests", 0)),
                               float(h.get(f"{a}:latency_ms", 0.0)),
                               float(h.get(f"{a}:latency_ms_sq", 0.0)),
                               int(h.get(f"{a}:errors", 0)), int(h.get(f"{a}:bytes", 0)))
            for a in arms if f"{a}:requests" in h}


def _weights(raw: Sequence[Any], arms: tuple[str, ...],
             experiment: str) -> tuple[WeightHistory, tuple[str, ...], tuple[str, ...]]:
    """The weight log as a WeightHistory in ``arms`` order. An entry that does not fit (other
    arms, not after the previous one, bad JSON) is skipped and named, never fatal: one bad
    entry must not hide an experiment's results."""
    history, ids, skipped = WeightHistory(), [], []
    for number, item in enumerate(raw):
        try:
            entry = json.loads(_text(item))
            weights = entry["weights"]
            if set(weights) != set(arms):
                raise ValueError(f"arms {sorted(weights)} are not {sorted(arms)}")
            at = datetime.fromtimestamp(int(entry["at"]), UTC)
            history = history.record(at, [float(weights[a]) for a in arms])
            ids.append(str(int(entry["at"])))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("experiment %r: weight log entry %d skipped: %s", experiment, number,
                        exc)
            skipped.append(f"weight log entry {number} ({exc})")
    return history, tuple(ids), tuple(skipped)
