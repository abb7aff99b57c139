"""Which rules apply to one request, and a named reason for every one that does not.

Pure: the rule set, the visitor context and the page in, a :class:`Plan` out. The engine
renders the plan into the page; ``/_kairos/why`` and ``kairos explain`` show it.

Conflicts: rules that claim the same slot (the same selector) on one page are ranked by
priority (higher first), then audience specificity (more conditions first), then file
order (file name, then position). A rule applies only whole: when any of its slots was
taken by a higher-ranked rule it loses, so a rule's changes never show half-applied.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from proxy.rules import matching, schedule
from proxy.rules.experiments import ARM_PRIORITY
from proxy.rules.model import Rule
from proxy.rules.ruleset import RuleSet
from proxy.values import quick_init

APPLIED = "applied"
LOST = "lost"
OUT_OF_AUDIENCE = "out_of_audience"
OUT_OF_SCHEDULE = "out_of_schedule"


@quick_init
@dataclass(frozen=True, slots=True)
class Decision:
    rule: Rule
    verdict: str  # APPLIED, LOST, OUT_OF_AUDIENCE or OUT_OF_SCHEDULE
    # Why not applied ("" when applied), or how to write it: a plan is made on every view,
    # its reasons are read only by /_kairos/why and `kairos explain`.
    why: str | Callable[[], str] = ""
    winner: str | None = None  # for LOST: the rule that took the slot

    @property
    def reason(self) -> str:
        why = self.why
        return why if isinstance(why, str) else why()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule.id, "where": self.rule.where,
                               "verdict": self.verdict, "priority": self.rule.priority,
                               "specificity": self.rule.specificity,
                               "slots": list(self.rule.slots)}
        if self.reason:
            out["reason"] = self.reason
        if self.winner:
            out["winner"] = self.winner
        return out


@dataclass(frozen=True, slots=True)
class Plan:
    host: str
    path: str
    decisions: tuple[Decision, ...]  # every rule for this page, best ranked first
    # The applied rules, best ranked first. Derived once: plans are remembered
    # (RECENT_PLANS), and every view that renders one asks for its rules.
    applied: tuple[Rule, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "applied", tuple(
            [d.rule for d in self.decisions if d.verdict == APPLIED]))

    def by_verdict(self, verdict: str) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if d.verdict == verdict)

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "path": self.path,
                "rules": [d.to_dict() for d in self.decisions]}


def getter(context: Any) -> Callable[[str], Any]:
    """``context.get``, or an empty context when there is none (then only rules without
    an audience or schedule apply, and placeholders show their defaults)."""
    if context is None:
        return lambda name: None
    get: Callable[[str], Any] = context.get
    return get


def rank(rule: Rule) -> tuple[int, int, tuple[str, int]]:
    return (-rule.priority, -rule.specificity, rule.order)


def plan(ruleset: RuleSet, context: Any, page: Any, arms: Sequence[Rule] = ()) -> Plan:
    """Decide for every rule whose pages match ``page`` (anything with ``host`` and
    ``path``, e.g. a :class:`proxy.page.PageRequest`). ``arms`` are the slot changes of
    the visitor's experiment arms, already decided: they outrank every rule.

    A plan depends on the visitor only through the few attributes its rules' audiences
    and schedules read (``device.kind``, ``source.class``...), so the plans of recent
    situations are remembered per rule set (:data:`RECENT_PLANS`), keyed by page, arms and
    those values (with their types: ``True`` must not pass for ``1``). A remembered plan
    was made from a snapshot of just those values, so it keeps no visitor's context alive
    and is exactly the plan this visitor would get."""
    host, path = page.host, page.path
    if context is None:
        return _plan(host, path, ruleset.candidates(host, path), getter(None), arms)
    recent = ruleset.recent_plans
    reads = recent.reads.get((host, path))
    if reads is None:
        reads = _reads(ruleset.candidates(host, path))
        if len(recent.reads) >= RECENT_PLANS:
            recent.reads.clear()
        recent.reads[host, path] = reads
    # (map rather than comprehensions, and the rule candidates only for a new plan: this
    # runs on every view, and a remembered plan needs neither a frame nor the page index)
    seen = tuple(map(context.get, reads))
    key = (host, path, tuple(map(id, arms)), seen, tuple(map(type, seen)))
    try:
        found = recent.plans.get(key)
    except TypeError:   # a value that cannot be a key (a signal's list): no memory
        return _plan(host, path, ruleset.candidates(host, path), context.get, arms)
    if found is not None:
        for kept, arm in zip(found[0], arms, strict=True):   # (as many: ids in the key)
            if kept is not arm:
                break
        else:
            return found[1]   # (the arms are kept with the plan, so their ids stay theirs)
    made = _plan(host, path, ruleset.candidates(host, path),
                 dict(zip(reads, seen, strict=True)).get, arms)
    plans = recent.plans
    if len(plans) >= RECENT_PLANS:
        plans.popitem(last=False)   # the oldest
    plans[key] = (tuple(arms), made)
    return made


RECENT_PLANS = 512
SCHEDULE_READS = ("time.date", "time.hour", "time.minute", "time.weekday_number",
                  "time.weekday", "time.zone")   # what schedule.check asks


def _reads(rules: Sequence[Rule]) -> tuple[str, ...]:
    """Every attribute the audiences and schedules of ``rules`` read, each once."""
    names: dict[str, None] = {}
    for rule in rules:
        if rule.audience is not None:
            names.update(dict.fromkeys(matching.attributes(rule.audience)))
        if rule.schedule is not None:
            names.update(dict.fromkeys(SCHEDULE_READS))
    return tuple(names)


def _plan(host: str, path: str, candidates: Sequence[Rule], get: Callable[[str], Any],
          arms: Sequence[Rule]) -> Plan:
    eligible: list[Rule] = list(arms)
    skipped: list[Decision] = []
    for rule in candidates:
        if rule.audience is not None and not matching.admits(rule.audience, get):
            skipped.append(Decision(rule, OUT_OF_AUDIENCE,
                                    partial(_audience_miss, rule.audience, get)))
            continue
        reason = schedule.check(rule.schedule, get) if rule.schedule is not None else None
        if reason is not None:
            skipped.append(Decision(rule, OUT_OF_SCHEDULE, reason))
            continue
        eligible.append(rule)
    claimed: dict[str, Rule] = {}
    decided: list[Decision] = []
    for rule in sorted(eligible, key=rank):
        taken = next((s for s in rule.slots if s in claimed), None)
        if taken is None:
            claimed.update(dict.fromkeys(rule.slots, rule))
            decided.append(Decision(rule, APPLIED))
            continue
        winner = claimed[taken]
        decided.append(Decision(rule, LOST, partial(_lost, taken, winner, rule), winner.id))
    decided.extend(sorted(skipped, key=lambda d: rank(d.rule)))
    return Plan(host, path, tuple(decided))


def _audience_miss(audience: matching.Node, get: Callable[[str], Any]) -> str:
    return matching.evaluate(audience, get) or ""


def _lost(slot: str, winner: Rule, loser: Rule) -> str:
    return f'slot "{slot}" is taken by rule "{winner.id}" ({why_first(winner, loser)})'


def why_first(winner: Rule, loser: Rule) -> str:
    if winner.priority >= ARM_PRIORITY:
        return f"an experiment arm: {winner.description}"
    if winner.priority != loser.priority:
        return f"priority {winner.priority} > {loser.priority}"
    if winner.specificity != loser.specificity:
        return (f"same priority, more specific audience: {winner.specificity} > "
                f"{loser.specificity} conditions")
    return f"same priority and specificity, earlier in file order: {winner.where}"
