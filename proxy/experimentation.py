"""Experiments on the request path: the rules folder's experiments meet one visitor.

Per worker, :class:`Experimentation` holds what is the same for every request (the rule
set's experiments, their layer slots, the bandit weights the background loop read, the
secrets for preview links and beacon tokens) and turns one page view into
:class:`PageExperiments`: the arm of every experiment on the page (or the named reason
why not), the arm's slot changes as rules, a redirect for a split-URL arm, the exposures
and page-goal conversions to count, and the cookie state that remembers them. The decisions
themselves are the pure functions of :mod:`proxy.experiment_runtime`; no Redis, no file
system, no randomness here.

Order on a page view: page goals first (with the memberships the visitor arrived with, so
that a goal page that is also an experiment page is not converted by the very view that
exposes the visitor), then the experiments of the page.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl

from experiments.assignment import HOLDOUT_SALT, LayerSlot, bucket, plan_layers
from experiments.model import Experiment, GoalKind

from . import signing
from .context.identity import Membership, VisitorState, with_membership, without_membership
from .experiment_runtime import (
    PREVIEW,
    GoalHit,
    Outcome,
    convert,
    decisions,
    with_covariate,
)
from .rules import matching
from .rules.experiments import ExperimentDef
from .rules.model import Rule
from .rules.optimise import base_of, segment_id
from .rules.pages import glob_regex
from .rules.plan import getter
from .rules.ruleset import RuleSet
from .store.events import Conversion, Exposure, utc_day
from .values import quick_init

log = logging.getLogger("kairos.experiments")

PREVIEW_PARAM = "kairos-preview"
PREVIEW_PURPOSE = "preview"
BEACON_PURPOSE = "beacon"
SCRIPT_KINDS = frozenset((GoalKind.CLICK, GoalKind.CUSTOM, GoalKind.REVENUE))
REPLAY_MEMORY = 100_000   # beacon tokens remembered per worker (a few MB at most)


@quick_init
@dataclass(frozen=True, slots=True)
class PageExperiments:
    """What the experiments decided for one page view."""

    outcomes: tuple[Outcome, ...] = ()      # one per experiment on this page
    arm_rules: tuple[Rule, ...] = ()        # the assigned arms' slot changes
    redirect: str | None = None             # split-URL arm: where the visitor goes instead
    state: VisitorState | None = None       # the cookie state to write back
    events: tuple[Exposure | Conversion, ...] = ()
    holdout: bool = False                   # no experiment and no personalisation
    script: str | None = None               # beacon token when the goals script is needed
    click_selectors: tuple[str, ...] = ()

    @property
    def changes_page(self) -> bool:
        """Must the page be buffered for these decisions? (Holdout visitors need nothing:
        the rules transform leaves their page alone.)"""
        return bool(self.arm_rules) or self.script is not None


NOTHING = PageExperiments()


@dataclass(frozen=True, slots=True)
class Weights:
    """Bandit weights in force, as the background loop last read them."""

    weights: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    periods: Mapping[str, str] = field(default_factory=dict)


class Experimentation:
    def __init__(self, rules: Callable[[], RuleSet], secrets: tuple[str, ...], *,
                 holdout: float = 0.0, beacon_ttl: int = 86_400,
                 weights: Callable[[], Weights] = Weights) -> None:
        self._rules = rules
        self.secrets = secrets
        self.holdout = holdout
        self.beacon_ttl = beacon_ttl
        self._weights = weights
        self._planned_for: RuleSet | None = None
        self._slots: dict[str, LayerSlot] = {}
        self._by_id: ByIdWithSegments = ByIdWithSegments({})
        self._defs: dict[str, ExperimentDef] = {}
        self._arms: dict[tuple[str, str], tuple[str | None, Rule | None]] = {}
        self._territory: dict[str, frozenset[str]] = {}
        self._script_goals_of: dict[str, tuple[tuple[str, ...], bool]] = {}
        self._seen_tokens: OrderedDict[str, None] = OrderedDict()

    # -- per rule set -------------------------------------------------------------------

    def _refresh(self) -> RuleSet:
        ruleset = self._rules()
        if ruleset is not self._planned_for:   # a reload: recompute once, not per request
            definitions = ruleset.experiments
            self._slots = plan_layers(d.experiment for d in definitions)
            self._by_id = ByIdWithSegments({d.id: d.experiment for d in definitions})
            self._defs = {d.id: d for d in definitions}
            # What each arm shows, built once per rule set rather than once per request.
            self._arms = {(d.id, a.arm): (a.redirect, d.arm_rule(a.arm))
                          for d in definitions for a in d.arms}
            self._territory = {d.id: frozenset(c.selector for a in d.arms for c in a.changes)
                               for d in definitions}
            self._script_goals_of = {}   # filled as memberships are seen (segments too)
            self._planned_for = ruleset
        return ruleset

    @property
    def definitions(self) -> Mapping[str, ExperimentDef]:
        self._refresh()
        return self._defs

    def has_experiments(self) -> bool:
        return bool(self._refresh().experiments)

    # -- a page view --------------------------------------------------------------------

    def on_page(self, context: Any, host: str, path: str, query: str, now: float
                ) -> PageExperiments:
        """Decide the experiments of one page view (GET of a document)."""
        ruleset = self._refresh()
        if not ruleset.experiments:
            return NOTHING
        state: VisitorState | None = context.cookie_state
        is_bot = context.device.kind == "bot"
        holdout = (state is not None and not is_bot and self.in_holdout(state.visitor_id))
        events: list[Exposure | Conversion] = []
        if state is not None and not is_bot and state.experiments:   # else nothing converts
            state, converted = convert(state, self._by_id, (GoalHit(GoalKind.PAGE, path),),
                                       utc_day(now), page_matches)
            events.extend(converted)
        on_page = ruleset.experiments_on(host, path)
        outcomes: tuple[Outcome, ...] = ()
        arm_rules: list[Rule] = []
        redirect = None
        if on_page:
            get = getter(context)
            current = self._weights()
            weights: Mapping[str, Sequence[float]] = current.weights
            periods = current.periods
            segments = {d.id: segment_id(d.id, d.segment_by, get) for d in on_page
                        if d.segment_by}
            if segments:
                weights, periods = _segment_weights(weights, periods, segments)
            before = state
            defs = self._defs
            outcomes, state, page_events = decisions(
                [d.experiment for d in on_page], _with_state(context, state),
                datetime.fromtimestamp(now, UTC), weights, periods, self._slots, self.holdout,
                lambda e: _in_audience(defs[e.id], get), self.read_preview(query, now))
            outcomes, state, page_events, redirect, arm_rules = self._shown(
                outcomes, state, page_events, before)
            if holdout or context.privacy_reason == "opted_out":
                # Only a preview link assigns such a visitor, and their objection (or the
                # holdout) wins over it: no slot changes (Personalisation) and no redirect.
                redirect, arm_rules = None, []
            events.extend(page_events)
            if segments and state is not None:
                state = _count_segments(state, page_events, segments, periods, events)
        token: str | None = None
        selectors: tuple[str, ...] = ()
        if state is not None and not is_bot and not state.opted_out:
            selectors, needs_script = self._script_goals(state)
            if needs_script:
                token = self.beacon_token(state, now)
        return PageExperiments(outcomes, tuple(arm_rules), redirect, state, tuple(events),
                               holdout, token, selectors)

    def _shown(self, outcomes: tuple[Outcome, ...], state: VisitorState | None,
               events: tuple[Exposure | Conversion, ...], before: VisitorState | None
               ) -> tuple[tuple[Outcome, ...], VisitorState | None,
                          tuple[Exposure | Conversion, ...], str | None, list[Rule]]:
        """What the visitor will really see, and only that counted. The first redirect arm
        (in file order) wins the whole page: no other arm is shown, so none is counted. An
        arm whose slot an earlier experiment's arm already changes is not shown either
        (experiments that share a slot belong in one layer; ``kairos rules check`` says so).
        """
        if len(outcomes) == 1:   # the usual page: one experiment, nothing it can clash with
            only = outcomes[0]
            if only.arm is None:
                return outcomes, state, events, None, []
            target, rule = self._arms[only.experiment, only.arm]
            shown = [rule] if rule is not None and target is None else []
            return outcomes, state, events, target, shown
        assigned: list[int] = []   # indexes: outcomes are shared values, not identities
        arms: list[tuple[Outcome, str | None, Rule | None]] = []
        leader = -1   # the first redirect arm
        redirect: str | None = None
        for i, o in enumerate(outcomes):
            if o.arm is not None:
                target, rule = self._arms[o.experiment, o.arm]
                assigned.append(i)
                arms.append((o, target, rule))
                if leader < 0 and target is not None:
                    leader, redirect = i, target
        rules: list[Rule] = []
        dropped: dict[str, str] = {}
        if leader >= 0:
            dropped = {outcomes[i].experiment: "redirected" for i in assigned if i != leader}
        else:
            claimed: set[str] = set()
            for outcome, _, rule in arms:
                # An experiment's territory is every slot any of its arms changes: its
                # control must not show another experiment's arm either.
                territory = self._territory[outcome.experiment]
                if not claimed.isdisjoint(territory):
                    dropped[outcome.experiment] = "slot_taken"
                    continue
                claimed.update(territory)
                if rule is not None:
                    rules.append(rule)
        if not dropped:
            return outcomes, state, events, redirect, rules
        for experiment in dropped:
            if state is not None:
                state = _restore(state, before, experiment)
        outcomes = tuple(Outcome(o.experiment, None, dropped[o.experiment])
                         if o.experiment in dropped else o for o in outcomes)
        events = tuple(e for e in events if e.experiment not in dropped)
        return outcomes, state, events, redirect, rules

    def in_holdout(self, visitor_id: str) -> bool:
        return self.holdout > 0.0 and bucket(f"holdout/{HOLDOUT_SALT}", visitor_id) < \
            self.holdout

    def _script_goals(self, state: VisitorState) -> tuple[tuple[str, ...], bool]:
        """Click selectors to watch, and whether the visitor has any goal only the script
        (clicks, custom events, revenue) can report."""
        selectors: dict[str, None] = {}
        needed = False
        for member in state.experiments:
            if not member.exposed:
                continue
            goals = self._script_goals_of.get(member.experiment)
            if goals is None:
                experiment = self._by_id.get(member.experiment)
                if experiment is None:
                    continue
                goals = self._script_goals_of[member.experiment] = _script_goals_of(experiment)
            clicks, script = goals
            needed = needed or script
            for selector in clicks:
                selectors[selector] = None
        return tuple(selectors), needed

    # -- goals reported later (beacon, custom event, origin header) ---------------------

    def hits(self, state: VisitorState, hits: Iterable[GoalHit], now: float
             ) -> tuple[VisitorState, tuple[Conversion, ...], str]:
        """Conversions for goals reported outside a page view; the reason is "" when some
        counted, else "duplicate" (every matching goal already converted) or
        "no_matching_exposure"."""
        self._refresh()
        hits = tuple(hits)
        new_state, events = convert(state, self._by_id, hits, utc_day(now), _same)
        if events:
            return new_state or state, events, ""
        for member in state.experiments:
            experiment = self._by_id.get(member.experiment)
            if experiment is None or not member.exposed:
                continue
            for goal in experiment.goals:
                if any(_kind_fits(goal.kind, h.kind) and goal.target == h.target
                       for h in hits):
                    return state, (), "duplicate"
        return state, (), "no_matching_exposure"

    # -- tokens -------------------------------------------------------------------------

    def beacon_token(self, state: VisitorState, now: float) -> str:
        """One token per page view (visit and page number in it): the replay check
        remembers a token per goal target, so each view may report each goal once."""
        view = f"{state.visit_number}.{state.visit_pages}"
        return signing.sign(self.secrets[0], BEACON_PURPOSE, (state.visitor_id, view,
                                                              str(int(now))),
                            int(now) + self.beacon_ttl)

    def check_beacon(self, token: Any, visitor_id: str, now: float, target: str) -> str:
        """"" for a fresh token of this visitor; else "malformed", "forged", "expired",
        "other_visitor" or "replayed" (the same token for the same target, this worker)."""
        fields = signing.verify(self.secrets, BEACON_PURPOSE, token, now)
        if isinstance(fields, str):
            return fields
        if len(fields) != 3:
            return "malformed"
        if fields[0] != visitor_id:
            return "other_visitor"
        key = f"{token}|{target}"
        if key in self._seen_tokens:
            return "replayed"
        self._seen_tokens[key] = None
        if len(self._seen_tokens) > REPLAY_MEMORY:
            self._seen_tokens.popitem(last=False)
        return ""

    def preview_token(self, experiment: str, arm: str, expires: int) -> str:
        definition = self.definitions.get(experiment)
        if definition is None:
            raise ValueError(f"no experiment {experiment!r} in the rules folder; known: "
                             f"{', '.join(sorted(self.definitions)) or 'none'}")
        if definition.experiment.arm_index(arm) is None:
            arms = ", ".join(a.id for a in definition.experiment.arms)
            raise ValueError(f"experiment {experiment!r} has no arm {arm!r}; arms: {arms}")
        return signing.sign(self.secrets[0], PREVIEW_PURPOSE, (experiment, arm), expires)

    def read_preview(self, query: str, now: float) -> dict[str, str]:
        """Arms forced by valid preview tokens in the query; invalid ones are ignored."""
        if PREVIEW_PARAM not in query:
            return {}
        forced: dict[str, str] = {}
        for name, value in parse_qsl(query, keep_blank_values=True):
            if name != PREVIEW_PARAM:
                continue
            fields = signing.verify(self.secrets, PREVIEW_PURPOSE, value, now)
            if isinstance(fields, tuple) and len(fields) == 2:
                forced[fields[0]] = fields[1]
            else:
                log.info("preview token ignored: %s", fields)
        return forced

    # -- /why ---------------------------------------------------------------------------

    def describe(self, context: Any, decided: PageExperiments) -> list[dict[str, Any]]:
        """Every experiment of this page (``decided``: :meth:`on_page` for it) with the
        visitor's arm or the reason they are not in it, and the experiments the visitor is
        already in elsewhere."""
        out: list[dict[str, Any]] = []
        for outcome in decided.outcomes:
            definition = self._defs[outcome.experiment]
            entry: dict[str, Any] = {"experiment": outcome.experiment,
                                     "kind": ("optimised rule" if definition.optimised
                                              else "experiment"),
                                     "where": definition.where,
                                     "description": definition.description,
                                     "arm": outcome.arm}
            if outcome.reason == PREVIEW:
                entry["reason"] = "preview link: forced arm, never counted"
            elif outcome.reason:
                entry["reason"] = REASONS.get(outcome.reason, outcome.reason)
                entry["code"] = outcome.reason
            else:
                entry["reason"] = ("your arm was drawn when you first saw this experiment"
                                   if outcome.sticky else "drawn for you now")
            out.append(entry)
        state = context.cookie_state
        on_page = {o.experiment for o in decided.outcomes}
        for member in state.experiments if state is not None else ():
            if member.experiment in on_page or member.experiment not in self._defs:
                continue
            out.append({"experiment": member.experiment, "arm": member.arm,
                        "where": self._defs[member.experiment].where,
                        "description": self._defs[member.experiment].description,
                        "reason": "you are in this experiment (it runs on other pages)"})
        return out


class ByIdWithSegments(dict[str, Experiment]):
    """Experiments by id, where ``<id>@<segment>`` (an optimised rule's segment) resolves
    to the rule's experiment under the segment's id: its conversions are counted per segment
    exactly like the rule's own."""

    def get(self, key: str, default: Any = None) -> Any:   # type: ignore[override]
        found = dict.get(self, key)   # called for every membership on every page view
        if found is not None:
            return found
        if "@" not in key:
            return default
        base = dict.get(self, base_of(key))
        if base is None:
            return default
        segment = replace(base, id=key)
        self[key] = segment   # bounded: segments per rule are few, and a reload starts anew
        return segment


def _restore(state: VisitorState, before: VisitorState | None, experiment: str
             ) -> VisitorState:
    """``state`` with ``experiment``'s membership as it was before this page view."""
    old = before.membership(experiment) if before is not None else None
    if old is not None:
        return with_membership(state, old)
    return without_membership(state, experiment)


def _script_goals_of(experiment: Experiment) -> tuple[tuple[str, ...], bool]:
    """An experiment's click selectors (in goal order), and whether any of its goals needs
    the script; the same for every visitor, so worked out once per experiment (bounded:
    the experiments of the rule set and their segments, and a reload starts anew)."""
    clicks = tuple(g.target for g in experiment.goals if g.kind is GoalKind.CLICK)
    return clicks, any(g.kind in SCRIPT_KINDS for g in experiment.goals)


def _segment_weights(weights: Mapping[str, Sequence[float]], periods: Mapping[str, str],
                     segments: Mapping[str, str]
                     ) -> tuple[Mapping[str, Sequence[float]], Mapping[str, str]]:
    """The weights (and their periods) with each optimised rule's replaced by its segment's,
    where the bandit has published some (else the rule's global weights, else the
    planned)."""
    weights_in_force, periods_in_force = dict(weights), dict(periods)
    for experiment, segment in segments.items():
        if segment in weights:
            weights_in_force[experiment] = weights[segment]
            periods_in_force[experiment] = periods.get(segment, "")
    return weights_in_force, periods_in_force


def _count_segments(state: VisitorState, counted: tuple[Exposure | Conversion, ...],
                    segments: Mapping[str, str], periods: Mapping[str, str],
                    events: list[Exposure | Conversion]) -> VisitorState:
    """An exposure counted for an optimised rule is also counted for its segment, and the
    cookie remembers the segment membership so later conversions are counted there too."""
    for event in counted:
        if not isinstance(event, Exposure):
            continue
        segment = segments.get(event.experiment)
        if segment is None:
            continue
        events.append(Exposure(segment, event.arm, event.day, event.probability,
                               periods.get(event.experiment, ""),
                               covariate=event.covariate))
        member = state.membership(event.experiment)
        if member is not None:   # the segment remembers the covariate too (CUPED)
            state = with_membership(state, Membership(
                segment, event.arm, member.salt_tag, True,
                with_covariate((), event.covariate)))
    return state


REASONS = {
    "slot_taken": "another experiment on this page changes the same element",
    "redirected": "another experiment sends you to a different page",
    "not_in_audience": "you are not in its audience",
    "outside_traffic": "you are outside the share of visitors it includes",
    "other_experiment_in_layer": "you are in another experiment of the same layer",
    "holdout": "you are in the holdout group that sees no experiment",
    "bot": "bots are never part of experiments",
    "opted_out": "you objected to personalisation",
    "not_started": "it has not started yet",
    "ended": "it has ended",
    "no_consent": "no consent to personalisation was given",
}


def _with_state(context: Any, state: VisitorState | None) -> Any:
    """The context as decide() needs it: with the state after this view's conversions."""
    if state is context.cookie_state:
        return context
    return replace(context, cookie_state=state)


def _in_audience(definition: ExperimentDef, get: Callable[[str], Any]) -> bool:
    if definition.audience is None:
        return True
    return matching.evaluate(definition.audience, get) is None


def _kind_fits(goal: GoalKind, hit: GoalKind) -> bool:
    return goal is hit or (goal is GoalKind.REVENUE and hit is GoalKind.CUSTOM)


@lru_cache(maxsize=1024)
def _page_pattern(target: str) -> re.Pattern[str]:
    return glob_regex(target)


def page_matches(target: str, path: str) -> bool:
    """A page goal's URL pattern (a glob like the rules' ``pages``) against a path."""
    return _page_pattern(target).fullmatch(path) is not None


def _same(target: str, reported: str) -> bool:
    """Click selectors and event names are compared exactly."""
    return target == reported
