"""Experiments as frozen dataclasses, and :func:`parse_experiment` that builds them.

An experiment is parsed once, when its rule file is loaded; everything downstream
(assignment, bandit, results) trusts the dataclasses and never re-checks them. A bad value
raises :class:`ValueError` naming where it is, the field, the bad value and what is valid.
Nothing is repaired on the way in: weights that do not add up to 1 are an error, never
rescaled and never replaced by equal weights (GrowthBook's SDK does the latter silently).

The first arm is the control: every comparison in :mod:`experiments.results` is against it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

_E = TypeVar("_E", bound=StrEnum)
WEIGHT_TOLERANCE = 1e-9
# Ids, salts and layer names feed the assignment hash as "<namespace>/<name>:<visitor>";
# keeping "/" and ":" out of them keeps every hash input unambiguous.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_NAME_RULE = "1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit"


class Allocation(StrEnum):
    FIXED = "fixed"    # the planned weights, for the whole run
    BANDIT = "bandit"  # Thompson sampling on the primary goal (experiments.bandit)


class GoalKind(StrEnum):
    PAGE = "page"        # a page view whose path matches ``target`` (a URL pattern)
    CLICK = "click"      # a click on an element matching ``target`` (a CSS selector)
    CUSTOM = "custom"    # a custom event named ``target``
    REVENUE = "revenue"  # the value carried by the custom event named ``target``


# The table key that holds each kind's target.
TARGET_KEY = {GoalKind.PAGE: "url", GoalKind.CLICK: "selector",
              GoalKind.CUSTOM: "event", GoalKind.REVENUE: "event"}


@dataclass(frozen=True, slots=True)
class Arm:
    id: str
    weight: float  # planned share of the experiment's traffic, 0..1


@dataclass(frozen=True, slots=True)
class Goal:
    id: str
    kind: GoalKind
    target: str
    primary: bool = False

    @property
    def binary(self) -> bool:
        """Converted-or-not goals use the binary variance p(1-p); revenue is a mean metric."""
        return self.kind is not GoalKind.REVENUE


@dataclass(frozen=True, slots=True)
class BanditSettings:
    """Thompson-sampling knobs (statistics.md, "Continuous optimisation")."""

    floor: float = 0.01            # every arm keeps at least this share: f + (1 - K f) w
    min_units: int = 100           # burn-in: planned weights until every arm has this many
    min_conversions: int = 40      # ... units and this many conversions
    top_two: bool = False          # weights = (P(best) + P(second best)) / 2
    # Pseudo-units pulling a segment toward the global posterior: a segment's own data
    # weighs as much as the global once it has this many units.
    segment_prior_strength: float = 1000.0
    cadence_seconds: int = 900     # how often one node recomputes and publishes weights


@dataclass(frozen=True, slots=True)
class Experiment:
    id: str
    arms: tuple[Arm, ...]
    goals: tuple[Goal, ...]
    salt: str = ""                 # "" means: the id (set in __post_init__)
    layer: str | None = None       # experiments sharing a layer are mutually exclusive
    traffic: float = 1.0           # share of eligible visitors that enter, 0..1
    allocation: Allocation = Allocation.FIXED
    start: datetime | None = None  # aware datetimes; None = already started / never ends
    end: datetime | None = None
    bandit: BanditSettings = field(default_factory=BanditSettings)

    def __post_init__(self) -> None:
        if not self.salt:
            object.__setattr__(self, "salt", self.id)

    @property
    def control(self) -> Arm:
        return self.arms[0]

    @property
    def primary_goal(self) -> Goal:
        return next(goal for goal in self.goals if goal.primary)

    @property
    def weights(self) -> tuple[float, ...]:
        return tuple([arm.weight for arm in self.arms])   # a list is quicker than a generator

    def arm_index(self, arm_id: str) -> int | None:
        for i, arm in enumerate(self.arms):   # a loop: a generator costs more, per page view
            if arm.id == arm_id:
                return i
        return None


_TOP_KEYS = {"id", "salt", "layer", "traffic", "arms", "allocation", "start", "end",
             "goals", "bandit"}
_ARM_KEYS = {"id", "weight"}
_GOAL_KEYS = {"id", "kind", "primary", "url", "selector", "event"}
_BANDIT_KEYS = {f.name for f in BanditSettings.__dataclass_fields__.values()}


def parse_experiment(table: Mapping[str, Any], where: str) -> Experiment:
    """Validate one experiment table (as read from TOML) into an :class:`Experiment`.

    ``where`` prefixes every message, e.g. ``"rules/hero.toml: experiment 'hero'"``.
    Raises ValueError on the first problem found.
    """
    _known_keys(table, _TOP_KEYS, where)
    exp_id = _name(table.get("id"), f"{where}: id")
    salt = _name(table.get("salt", exp_id), f"{where}: salt")
    layer = table.get("layer")
    if layer is not None:
        layer = _name(layer, f"{where}: layer")
    traffic = _share(table.get("traffic", 1.0), f"{where}: traffic")
    allocation = _choice(table.get("allocation", "fixed"), Allocation, f"{where}: allocation")
    start = _moment(table.get("start"), f"{where}: start")
    end = _moment(table.get("end"), f"{where}: end")
    if start is not None and end is not None and end <= start:
        raise ValueError(f"{where}: end {end.isoformat()} is not after start "
                         f"{start.isoformat()}; give an end later than the start")
    arms = _arms(table.get("arms"), where)
    bandit = _bandit(table.get("bandit", {}), f"{where}: bandit")
    check_floor(bandit.floor, len(arms), f"{where}: bandit")
    return Experiment(
        id=exp_id, salt=salt, layer=layer, traffic=traffic, allocation=allocation,
        start=start, end=end, arms=arms, goals=_goals(table.get("goals"), where),
        bandit=bandit,
    )


def _arms(raw: Any, where: str) -> tuple[Arm, ...]:
    if not isinstance(raw, list) or len(raw) < 2:
        raise ValueError(f"{where}: arms must be a list of at least 2 tables "
                         f"(control first), got {raw!r}")
    arms: list[Arm] = []
    for i, item in enumerate(raw):
        at = f"{where}: arms[{i}]"
        if not isinstance(item, Mapping):
            raise ValueError(f"{at}: expected a table with id and weight, got {item!r}")
        _known_keys(item, _ARM_KEYS, at)
        arm_id = _name(item.get("id"), f"{at}: id")
        if "weight" not in item:
            raise ValueError(f"{at} ({arm_id!r}): weight is missing; give a share 0..1")
        arms.append(Arm(arm_id, _share(item["weight"], f"{at} ({arm_id!r}): weight")))
    _unique([arm.id for arm in arms], f"{where}: arms")
    total = math.fsum(arm.weight for arm in arms)
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        listed = ", ".join(f"{arm.id}={arm.weight:g}" for arm in arms)
        raise ValueError(f"{where}: arm weights sum to {total:.12g} ({listed}), expected 1 "
                         f"within {WEIGHT_TOLERANCE:g}; weights are never rescaled")
    return tuple(arms)


def _goals(raw: Any, where: str) -> tuple[Goal, ...]:
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{where}: goals must be a non-empty list of tables, got {raw!r}")
    goals: list[Goal] = []
    for i, item in enumerate(raw):
        at = f"{where}: goals[{i}]"
        if not isinstance(item, Mapping):
            raise ValueError(f"{at}: expected a table with id and kind, got {item!r}")
        _known_keys(item, _GOAL_KEYS, at)
        goal_id = _name(item.get("id"), f"{at}: id")
        kind = _choice(item.get("kind"), GoalKind, f"{at} ({goal_id!r}): kind")
        key = TARGET_KEY[kind]
        for other in {"url", "selector", "event"} - {key}:
            if other in item:
                raise ValueError(f"{at} ({goal_id!r}): a {kind} goal takes {key}, not {other}")
        target = item.get(key)
        if not isinstance(target, str) or not target.strip():
            raise ValueError(f"{at} ({goal_id!r}): {key} must be a non-empty string for a "
                             f"{kind} goal, got {target!r}")
        primary = item.get("primary", False)
        if not isinstance(primary, bool):
            raise ValueError(f"{at} ({goal_id!r}): primary must be true or false, "
                             f"got {primary!r}")
        goals.append(Goal(goal_id, kind, target, primary))
    _unique([goal.id for goal in goals], f"{where}: goals")
    primaries = [goal.id for goal in goals if goal.primary]
    if len(primaries) != 1:
        raise ValueError(f"{where}: exactly one goal must have primary = true, found "
                         f"{len(primaries)} ({', '.join(primaries) or 'none'})")
    return tuple(goals)


def _bandit(raw: Any, where: str) -> BanditSettings:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected a table, got {raw!r}")
    _known_keys(raw, _BANDIT_KEYS, where)
    default = BanditSettings()
    floor = _share(raw.get("floor", default.floor), f"{where}: floor")
    min_units = _count(raw.get("min_units", default.min_units), f"{where}: min_units")
    min_conv = _count(raw.get("min_conversions", default.min_conversions),
                      f"{where}: min_conversions")
    top_two = raw.get("top_two", default.top_two)
    if not isinstance(top_two, bool):
        raise ValueError(f"{where}: top_two must be true or false, got {top_two!r}")
    strength = _number(raw.get("segment_prior_strength", default.segment_prior_strength),
                       f"{where}: segment_prior_strength")
    if strength <= 0:
        raise ValueError(f"{where}: segment_prior_strength must be > 0, got {strength!r}")
    cadence = _count(raw.get("cadence_seconds", default.cadence_seconds),
                     f"{where}: cadence_seconds")
    if cadence < 1:
        raise ValueError(f"{where}: cadence_seconds must be >= 1, got {cadence!r}")
    return BanditSettings(floor, min_units, min_conv, top_two, strength, cadence)


def check_floor(floor: float, arms: int, where: str) -> None:
    """The floor is feasible only if K * f <= 1 (otherwise p_i = f + (1 - K f) w_i < f)."""
    if arms * floor > 1.0:
        raise ValueError(f"{where}: floor {floor:g} x {arms} arms = {arms * floor:g} > 1; "
                         f"give a floor of at most {1 / arms:g}")


def _known_keys(table: Mapping[str, Any], valid: set[str], where: str) -> None:
    unknown = sorted(set(table) - valid)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; valid keys are "
                         f"{', '.join(sorted(valid))}")


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(f"{where}: {value!r} is not a valid name; use {_NAME_RULE}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _share(value: Any, where: str) -> float:
    number = _number(value, where)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{where}: {value!r} is outside 0..1; give a share from 0 to 1")
    return number


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where}: expected a whole number >= 0, got {value!r}")
    return value


def _choice(value: Any, enum: type[_E], where: str) -> _E:
    try:
        return enum(value)
    except ValueError:
        valid = ", ".join(repr(member.value) for member in enum)
        raise ValueError(f"{where}: {value!r} is not one of {valid}") from None


def _moment(value: Any, where: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{where}: {value!r} is not an ISO 8601 date-time such as "
                             "2025-03-01T09:00:00+01:00") from None
    if not isinstance(value, datetime):
        raise ValueError(f"{where}: expected a date-time with a UTC offset, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{where}: {value.isoformat()} has no UTC offset; write it as "
                         f"{value.isoformat()}Z or with +HH:MM")
    return value


def _unique(ids: list[str], where: str) -> None:
    seen: set[str] = set()
    for item in ids:
        if item in seen:
            raise ValueError(f"{where}: id {item!r} appears more than once; ids must be unique")
        seen.add(item)
