"""Experiments at request time, pure: which arm, what to count, what the cookie remembers.

The proxy hands in the experiments that apply to the page, the visitor context and the
cookie state; it gets back an outcome per experiment (an arm, or the named reason why not),
the events to record and the new cookie state. No I/O and no randomness: assignment is the
deterministic hash of :mod:`experiments.assignment`, and deduplication (one exposure per
visitor and experiment, one binary conversion per visitor and goal) lives in the signed
cookie's memberships, never in per-visitor Redis sets.

CUPED (statistics.md, "Health checks") needs a covariate x per visitor that the arm cannot
have influenced; see :func:`pre_exposure_covariate` for the one used and why. The exposure
carries x to the store (sum of x and of x^2 per arm), and the membership remembers it in the
cookie, so that every later conversion carries it too (sum of x * value per goal).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from itertools import product

from experiments.assignment import LayerSlot, VisitorFacts, drawn_arm, exclusion
from experiments.model import Experiment, GoalKind

from .context.identity import (
    MAX_GOALS,
    Membership,
    VisitorState,
    with_membership,
    with_memberships,
)
from .context.model import VisitorContext
from .store.events import Conversion, Exposure

PREVIEW = "preview"

# The covariate lives in the membership's goal totals under a name no goal can have (goal
# ids match [A-Za-z0-9][A-Za-z0-9_.-]*), so the cookie format does not change. It takes one
# of the MAX_GOALS (8) entries the cookie keeps per membership, first, so it is never the
# one cut off: an experiment with MAX_GOALS goals or more records no covariate (its goal
# totals keep every entry, and CUPED is simply not applied to it).
COVARIATE_GOAL = "~x"
# Previous visits above this count as this many: a few very frequent visitors (or a script
# that keeps its cookie) must not dominate theta; any fixed function of what happened
# before the exposure is a valid CUPED covariate, and small whole numbers keep the store's
# sums of x and x^2 exact.
COVARIATE_CAP = 100


@dataclass(frozen=True, slots=True)
class Outcome:
    experiment: str
    arm: str | None          # None: the visitor sees the page without this experiment
    reason: str              # "" when assigned; a NotAssignedReason value, or "preview"
    sticky: bool = False
    counted: bool = False    # this request recorded the visitor's (first) exposure


@dataclass(frozen=True, slots=True)
class Decisions:
    outcomes: tuple[Outcome, ...]
    state: VisitorState | None
    events: tuple[Exposure | Conversion, ...]

    def arm_of(self, experiment: str) -> str | None:
        return next((o.arm for o in self.outcomes if o.experiment == experiment), None)


@dataclass(frozen=True, slots=True)
class Situation:
    """Everything besides the visitor that assignment depends on, per worker."""

    now: datetime
    weights: Mapping[str, Sequence[float]]      # bandit weights in force, by experiment
    periods: Mapping[str, str]                  # period id of those weights, by experiment
    slots: Mapping[str, LayerSlot]              # by experiment id, from plan_layers()
    holdout: float = 0.0


@lru_cache(maxsize=1024)   # salts are few; the tag is compared on every page view
def salt_tag(salt: str) -> int:
    return zlib.crc32(salt.encode("utf-8"))


# Every VisitorFacts there can be, built once: the facts are four booleans, and immutable
# values can be shared by every request.
_FACTS = {flags: VisitorFacts(*flags) for flags in product((False, True), repeat=4)}


def visitor_facts(context: VisitorContext, in_audience: bool) -> VisitorFacts:
    reason = context.privacy_reason
    return _facts(in_audience, context.device.kind == "bot",
                  reason in ("opted_out", "gpc", "dnt"), reason != "no_consent")


def _facts(in_audience: bool, is_bot: bool, opted_out: bool, consented: bool) -> VisitorFacts:
    if in_audience is True or in_audience is False:   # else (a truthy value): kept as given
        return _FACTS[in_audience, is_bot, opted_out, consented]
    return VisitorFacts(in_audience, is_bot, opted_out, consented)


def pre_exposure_covariate(state: VisitorState) -> float:
    """x for CUPED: the visitor's previous visits (``visit_number - 1``), at most
    :data:`COVARIATE_CAP`.

    Why this one: it is known for every visitor with a cookie at the moment of the exposure,
    and it is fixed before the exposure can change anything (visits that ended before the
    current one began), so adjusting for it removes variance without adding bias. Returning
    visitors convert and spend more than first-time ones, so it correlates with most goals.
    Pages of earlier visits would be a finer measure of engagement, but the cookie does not
    keep them (only the current visit's page count); pages of the current visit before the
    exposure are mostly 0, as experiments usually show on the landing page.
    """
    return float(min(max(state.visit_number - 1, 0), COVARIATE_CAP))


def covariate_of(member: Membership) -> float | None:
    """The covariate remembered for ``member`` at its exposure; None if there is none."""
    for name, value in member.goals:
        if name == COVARIATE_GOAL:
            return value
    return None


def with_covariate(goals: tuple[tuple[str, float], ...], x: float | None
                   ) -> tuple[tuple[str, float], ...]:
    """``goals`` (a membership's totals) with the covariate entry set to ``x``, first (the
    cookie keeps the first MAX_GOALS entries), or removed when ``x`` is None."""
    if not goals:   # a first exposure: nothing to keep
        return () if x is None else ((COVARIATE_GOAL, x),)
    rest = tuple(entry for entry in goals if entry[0] != COVARIATE_GOAL)
    return rest if x is None else ((COVARIATE_GOAL, x), *rest)


def decide(
    experiments: Sequence[Experiment],
    context: VisitorContext,
    situation: Situation,
    *,
    in_audience: Callable[[Experiment], bool],
    preview: Mapping[str, str] | None = None,
) -> Decisions:
    """Outcomes for the experiments on this page, and the exposures to count."""
    return Decisions(*decisions(experiments, context, situation.now, situation.weights,
                                situation.periods, situation.slots, situation.holdout,
                                in_audience, preview))


def decisions(
    experiments: Sequence[Experiment],
    context: VisitorContext,
    now: datetime,
    weights: Mapping[str, Sequence[float]],
    periods: Mapping[str, str],
    slots: Mapping[str, LayerSlot],
    holdout: float,
    in_audience: Callable[[Experiment], bool],
    preview: Mapping[str, str] | None,
) -> tuple[tuple[Outcome, ...], VisitorState | None, tuple[Exposure | Conversion, ...]]:
    """:func:`decide`'s outcomes, state and events, from the situation's parts: a page view
    has no Situation or Decisions to build (each a frozen dataclass, ~1 µs apiece)."""
    state = context.cookie_state
    outcomes: list[Outcome] = []
    events: list[Exposure | Conversion] = []
    day = ""   # of the first exposure, if any
    # What the facts say of the visitor is the same for every experiment but the audience.
    reason = context.privacy_reason
    is_bot = context.device.kind == "bot"
    opted_out = reason in ("opted_out", "gpc", "dnt")
    consented = reason != "no_consent"
    if state is None and consented and not opted_out and not is_bot:
        # No identity to hash (profiling is off for a reason the facts do not name): the
        # facts exclude the visitor before any hash is taken.
        opted_out = True
    # The placeholder only satisfies assign()'s check that an id was given.
    visitor_id = state.visitor_id if state is not None else "anonymous"
    # The memberships this view adds, newest last; the state is rebuilt once, at the end.
    joined: dict[str, Membership] = {}
    for experiment in experiments:
        experiment_id = experiment.id
        forced = preview.get(experiment_id) if preview else None
        if forced is not None and experiment.arm_index(forced) is not None:
            outcomes.append(_outcome(experiment_id, forced, PREVIEW, False, False))
            continue   # never counted
        member = joined.get(experiment_id) or (
            state.membership(experiment_id) if state is not None else None)
        facts = _facts(in_audience(experiment), is_bot, opted_out, consented)
        # assign(), in its pieces (tests/test_experiments_speed_equivalence.py holds them
        # to it): the stored arm is the member's when it was drawn under the current salt.
        excluded = exclusion(experiment, visitor_id, facts, now, slots.get(experiment_id),
                             holdout)
        if excluded is not None:
            outcomes.append(_outcome(experiment_id, None, str(excluded), False, False))
            continue
        if (member is not None and member.salt_tag == salt_tag(experiment.salt)
                and experiment.arm_index(member.arm) is not None):
            arm, probability, sticky = member.arm, 1.0, True
        else:
            index, probability = drawn_arm(experiment, visitor_id, weights.get(experiment_id))
            arm, sticky = experiment.arms[index].id, False
        counted = False
        if state is not None and (member is None or member.arm != arm or not member.exposed):
            goals = member.goals if member is not None and member.arm == arm else ()
            x = pre_exposure_covariate(state) if len(experiment.goals) < MAX_GOALS else None
            joined.pop(experiment_id, None)   # an experiment given twice: the last is newest
            joined[experiment_id] = (
                Membership(experiment_id, arm, salt_tag(experiment.salt), True,
                           with_covariate(goals, x)) if goals
                else _first_membership(experiment_id, arm, experiment.salt, x))
            day = day or _iso_day(now.toordinal())
            events.append(_exposure(experiment_id, arm, day, probability,
                                    periods.get(experiment_id, ""), x))
            counted = True
        outcomes.append(_outcome(experiment_id, arm, "", sticky, counted))
    if joined and state is not None:
        state = with_memberships(state, tuple(joined.values()))
    return tuple(outcomes), state, tuple(events)


# Outcomes, first memberships and exposures are values that many visitors share (a few
# experiments, arms, reasons, days, covariates 0-100): each is built once and handed out
# again, as a frozen dataclass costs ~1 µs to build. typed=True keeps 1 and 1.0 (or True)
# apart, as the values built would differ. Bounded, and none holds anything of a visitor's
# but an arm and a capped visit count.
@lru_cache(maxsize=1024, typed=True)
def _outcome(experiment: str, arm: str | None, reason: str, sticky: bool, counted: bool
             ) -> Outcome:
    return Outcome(experiment, arm, reason, sticky, counted)


@lru_cache(maxsize=1024, typed=True)
def _first_membership(experiment: str, arm: str, salt: str, x: float | None) -> Membership:
    """The membership of a visitor's first exposure to ``experiment`` (no goals yet)."""
    return Membership(experiment, arm, salt_tag(salt), True, with_covariate((), x))


@lru_cache(maxsize=1024, typed=True)
def _exposure(experiment: str, arm: str, day: str, probability: float, period: str,
              x: float | None) -> Exposure:
    return Exposure(experiment, arm, day, probability, period, x)


@lru_cache(maxsize=8)
def _iso_day(ordinal: int) -> str:
    """``now.date().isoformat()`` by the date's ordinal: a day has one name."""
    return date.fromordinal(ordinal).isoformat()


@dataclass(frozen=True, slots=True)
class GoalHit:
    """Something a visitor did that may be a goal: a page view, a click, a custom event."""

    kind: GoalKind
    target: str                  # the path viewed, the selector clicked, the event name
    value: float | None = None   # revenue, for value goals


def convert(
    state: VisitorState | None,
    experiments: Mapping[str, Experiment],
    hits: Iterable[GoalHit],
    day: str,
    matches: Callable[[str, str], bool],
) -> tuple[VisitorState | None, tuple[Conversion, ...]]:
    """Conversions for the experiments the visitor was counted in; the cookie deduplicates.

    Only memberships whose exposure was counted convert (a beacon or a page view without a
    matching exposure counts nothing). A binary goal converts once per visitor; a revenue
    goal adds each value to the visitor's running total. Each conversion carries the
    covariate its membership remembers (None for memberships counted before covariates were
    recorded); the covariate entry itself is never a goal.
    """
    if state is None or state.opted_out:
        return state, ()
    events: list[Conversion] = []
    for hit in hits:
        for member in state.experiments:
            experiment = experiments.get(member.experiment)
            if experiment is None or not member.exposed:
                continue
            for goal in experiment.goals:
                if not _kind_matches(goal.kind, hit.kind) or not matches(goal.target,
                                                                         hit.target):
                    continue
                previous = member.total(goal.id)
                if goal.binary:
                    if previous is not None:
                        continue   # a binary goal converts once per visitor
                    event = Conversion.binary(experiment.id, goal.id, member.arm, day,
                                              covariate_of(member))
                    total = 1.0
                elif hit.value is None:
                    continue       # a revenue goal needs a value
                else:
                    event = Conversion.revenue(experiment.id, goal.id, member.arm, day,
                                               hit.value, previous or 0.0,
                                               covariate_of(member))
                    total = (previous or 0.0) + hit.value
                events.append(event)
                goals = tuple((g, v) for g, v in member.goals if g != goal.id)
                member = Membership(member.experiment, member.arm, member.salt_tag, True,
                                    (*goals, (goal.id, total)))
                state = with_membership(state, member)
    return state, tuple(events)


def _kind_matches(goal: GoalKind, hit: GoalKind) -> bool:
    """A custom event is both its own binary goal and, with a value, a revenue goal."""
    return goal is hit or (goal is GoalKind.REVENUE and hit is GoalKind.CUSTOM)
