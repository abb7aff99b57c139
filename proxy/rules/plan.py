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
from dataclasses import dataclass
from typing import Any

from proxy.rules import matching, schedule
from proxy.rules.experiments import ARM_PRIORITY
from proxy.rules.model import Rule
from proxy.rules.ruleset import RuleSet

APPLIED = "applied"
LOST = "lost"
OUT_OF_AUDIENCE = "out_of_audience"
OUT_OF_SCHEDULE = "out_of_schedule"


@dataclass(frozen=True, slots=True)
class Decision:
    rule: Rule
    verdict: str  # APPLIED, LOST, OUT_OF_AUDIENCE or OUT_OF_SCHEDULE
    reason: str = ""  # empty when applied
    winner: str | None = None  # for LOST: the rule that took the slot

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

    @property
    def applied(self) -> tuple[Rule, ...]:
        return tuple(d.rule for d in self.decisions if d.verdict == APPLIED)

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
    the visitor's experiment arms, already decided: they outrank every rule."""
    get = getter(context)
    eligible: list[Rule] = list(arms)
    skipped: list[Decision] = []
    for rule in ruleset.candidates(page.host, page.path):
        reason = matching.evaluate(rule.audience, get) if rule.audience is not None else None
        if reason is not None:
            skipped.append(Decision(rule, OUT_OF_AUDIENCE, reason))
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
        decided.append(Decision(rule, LOST, f'slot "{taken}" is taken by rule "{winner.id}" '
                                f"({why_first(winner, rule)})", winner.id))
    decided.extend(sorted(skipped, key=lambda d: rank(d.rule)))
    return Plan(page.host, page.path, tuple(decided))


def why_first(winner: Rule, loser: Rule) -> str:
    if winner.priority >= ARM_PRIORITY:
        return f"an experiment arm: {winner.description}"
    if winner.priority != loser.priority:
        return f"priority {winner.priority} > {loser.priority}"
    if winner.specificity != loser.specificity:
        return (f"same priority, more specific audience: {winner.specificity} > "
                f"{loser.specificity} conditions")
    return f"same priority and specificity, earlier in file order: {winner.where}"
