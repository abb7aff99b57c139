"""Experiments at request time, pure: which arm, what to count, what the cookie remembers.

The proxy hands in the experiments that apply to the page, the visitor context and the
cookie state; it gets back an outcome per experiment (an arm, or the named reason why not),
the events to record and the new cookie state. No I/O and no randomness: assignment is the
deterministic hash of :mod:`experiments.assignment`, and deduplication (one exposure per
visitor and experiment, one binary conversion per visitor and goal) lives in the signed
cookie's memberships, never in per-visitor Redis sets.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from experiments.assignment import (
    Assignment,
    LayerSlot,
    NotAssigned,
    StoredAssignment,
    VisitorFacts,
    assign,
)
from experiments.model import Experiment, GoalKind

from .context.identity import Membership, VisitorState, with_membership
from .context.model import VisitorContext
from .store.events import Conversion, Exposure

PREVIEW = "preview"


@dataclass(frozen=True)
class Outcome:
    experiment: str
    arm: str | None          # None: the visitor sees the page without this experiment
    reason: str              # "" when assigned; a NotAssignedReason value, or "preview"
    sticky: bool = False
    counted: bool = False    # this request recorded the visitor's (first) exposure


@dataclass(frozen=True)
class Decisions:
    outcomes: tuple[Outcome, ...]
    state: VisitorState | None
    events: tuple[Exposure | Conversion, ...]

    def arm_of(self, experiment: str) -> str | None:
        return next((o.arm for o in self.outcomes if o.experiment == experiment), None)


@dataclass(frozen=True)
class Situation:
    """Everything besides the visitor that assignment depends on, per worker."""

    now: datetime
    weights: Mapping[str, Sequence[float]]      # bandit weights in force, by experiment
    periods: Mapping[str, str]                  # period id of those weights, by experiment
    slots: Mapping[str, LayerSlot]              # by experiment id, from plan_layers()
    holdout: float = 0.0


def salt_tag(salt: str) -> int:
    return zlib.crc32(salt.encode("utf-8"))


def visitor_facts(context: VisitorContext, in_audience: bool) -> VisitorFacts:
    reason = context.privacy_reason
    return VisitorFacts(
        in_audience=in_audience,
        is_bot=context.device.kind == "bot",
        opted_out=reason in ("opted_out", "gpc", "dnt"),
        consented=reason != "no_consent",
    )


def decide(
    experiments: Sequence[Experiment],
    context: VisitorContext,
    situation: Situation,
    *,
    in_audience: Callable[[Experiment], bool],
    preview: Mapping[str, str] | None = None,
) -> Decisions:
    """Outcomes for the experiments on this page, and the exposures to count."""
    state = context.cookie_state
    outcomes: list[Outcome] = []
    events: list[Exposure | Conversion] = []
    day = situation.now.date().isoformat()
    for experiment in experiments:
        forced = (preview or {}).get(experiment.id)
        if forced is not None and experiment.arm_index(forced) is not None:
            outcomes.append(Outcome(experiment.id, forced, PREVIEW))   # never counted
            continue
        result = _assign(experiment, context, state, situation, in_audience(experiment))
        if isinstance(result, NotAssigned):
            outcomes.append(Outcome(experiment.id, None, str(result.reason)))
            continue
        counted = False
        if state is not None:
            member = state.membership(experiment.id)
            if member is None or member.arm != result.arm or not member.exposed:
                goals = member.goals if member is not None and member.arm == result.arm else ()
                state = with_membership(state, Membership(
                    experiment.id, result.arm, salt_tag(result.salt), True, goals))
                events.append(Exposure(experiment.id, result.arm, day, result.probability,
                                       situation.periods.get(experiment.id, "")))
                counted = True
        outcomes.append(Outcome(experiment.id, result.arm, "", result.sticky, counted))
    return Decisions(tuple(outcomes), state, tuple(events))


def _assign(experiment: Experiment, context: VisitorContext, state: VisitorState | None,
            situation: Situation, in_audience: bool) -> Assignment | NotAssigned:
    facts = visitor_facts(context, in_audience)
    # Without a cookie identity (profiling off) the facts exclude the visitor before any hash
    # is taken; the placeholder only satisfies assign()'s check that an id was given.
    visitor_id = state.visitor_id if state is not None else "anonymous"
    stored = None
    member = state.membership(experiment.id) if state is not None else None
    if member is not None and member.salt_tag == salt_tag(experiment.salt):
        stored = StoredAssignment(member.arm, experiment.salt, 1.0)
    if state is None and facts.consented and not facts.opted_out and not facts.is_bot:
        # No identity to hash (profiling is off for a reason the facts do not name).
        facts = VisitorFacts(in_audience, facts.is_bot, True, facts.consented)
    return assign(experiment, visitor_id, facts=facts, now=situation.now, stored=stored,
                  weights=situation.weights.get(experiment.id),
                  slot=situation.slots.get(experiment.id),
                  holdout=situation.holdout)


@dataclass(frozen=True)
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
    goal adds each value to the visitor's running total.
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
                    event = Conversion.binary(experiment.id, goal.id, member.arm, day)
                    total = 1.0
                elif hit.value is None:
                    continue       # a revenue goal needs a value
                else:
                    event = Conversion.revenue(experiment.id, goal.id, member.arm, day,
                                               hit.value, previous or 0.0)
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
