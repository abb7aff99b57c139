"""The folder's rules as one immutable :class:`RuleSet`: ids unique across files, segment
references resolved, and the page index built. Swapped whole on reload, so a request
always sees one consistent set.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from experiments.model import WEIGHT_TOLERANCE
from proxy.rules.conditions import count, resolve
from proxy.rules.experiments import ExperimentDef
from proxy.rules.model import Node, Problem, Rule, RuleError, Segment
from proxy.rules.pages import PageIndex
from proxy.rules.parse import FileRules


class RecentPlans:
    """Plans of one rule set for recent situations (:func:`proxy.rules.plan.plan` owns the
    contents); it lives and dies with its rule set, so a reload starts afresh."""

    __slots__ = ("plans", "reads")

    def __init__(self) -> None:
        self.reads: dict[tuple[str, str], tuple[str, ...]] = {}   # by host and path
        self.plans: OrderedDict[Any, Any] = OrderedDict()   # O(1) to forget the oldest


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]  # file order: file name, then position
    segments: Mapping[str, Segment]
    index: PageIndex = field(compare=False, repr=False)
    disabled: tuple[str, ...] = ()  # ids of rules with enabled = false
    experiments: tuple[ExperimentDef, ...] = ()  # file order, audiences resolved
    experiment_index: PageIndex = field(default_factory=lambda: PageIndex(()), compare=False,
                                        repr=False)
    recent_plans: RecentPlans = field(default_factory=RecentPlans, compare=False, repr=False)

    def experiments_on(self, host: str, path: str) -> tuple[ExperimentDef, ...]:
        """The experiments whose pages match, in file order."""
        if not self.experiments:
            return ()
        return self.experiment_index.candidates(host, path)  # type: ignore[return-value]

    def experiment(self, experiment_id: str) -> ExperimentDef | None:
        return next((e for e in self.experiments if e.id == experiment_id), None)

    def candidates(self, host: str, path: str) -> tuple[Rule, ...]:
        return self.index.candidates(host, path)

    def wants(self, host: str, path: str) -> bool:
        return self.index.any(host, path)

    def get(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)


EMPTY = RuleSet((), MappingProxyType({}), PageIndex(()))


def build(files: Sequence[FileRules]) -> tuple[RuleSet, tuple[RuleError, ...]]:
    """One rule set from the parsed files, and the problems found across files."""
    ordered = sorted(files, key=lambda f: f.name)
    errors: list[RuleError] = []
    segments = _segments(ordered, errors)
    # segments with errors, by name: what depends on them says so, not "unknown segment"
    broken = {e.segment: f"{e.file}:{e.line}" for f in ordered for e in f.errors if e.segment}
    nodes: dict[str, Node] = {name: s.node for name, s in segments.items()}
    good: dict[str, Segment] = {}
    for name, segment in segments.items():
        try:
            good[name] = replace(segment, node=resolve(segment.node, nodes, (name,)))
        except Problem as p:
            errors.append(RuleError(segment.file, segment.line, _explain(p, broken, "segment"),
                                    segment=name))
            broken.setdefault(name, f"{segment.file}:{segment.line}")
    usable = {name: nodes[name] for name in good}
    dropped = _unique_ids(ordered, errors)
    rules: list[Rule] = []
    for file in ordered:
        for rule in file.rules:
            if id(rule) in dropped:
                continue
            resolved = _resolve(rule, usable, broken, errors)
            if resolved is not None:
                rules.append(resolved)
    disabled = tuple(i for f in ordered for i in f.disabled)
    experiments = _experiments(ordered, usable, broken, errors, dropped)
    ruleset = RuleSet(tuple(rules), MappingProxyType(good), PageIndex(rules), disabled,
                      experiments, PageIndex(experiments))  # type: ignore[arg-type]
    return ruleset, tuple(errors)


def _unique_ids(files: Sequence[FileRules], errors: list[RuleError]) -> set[int]:
    """Which rules and experiments lose their id (by ``id()``): the first in file order
    (file name, then line) keeps it. Rules, plain and optimised, share one set of ids; an
    optimised rule runs as an experiment counted under its id, so optimised rules and
    ``[[experiment]]`` tables share another. (Within a file, parse_file has already
    refused a rule or an experiment repeating an earlier one of its kind.)"""
    rules: dict[str, Rule | ExperimentDef] = {}
    experiments: dict[str, ExperimentDef] = {}
    dropped: set[int] = set()
    for file in files:
        items: list[Rule | ExperimentDef] = [*file.rules, *file.experiments]
        for item in sorted(items, key=lambda i: i.line):
            definition = item if isinstance(item, ExperimentDef) else None
            is_rule = definition is None or definition.optimised
            first = rules.get(item.id) if is_rule else None
            if first is None and definition is not None:
                first = experiments.get(item.id)
            if first is None:
                if is_rule:
                    rules[item.id] = item
                if definition is not None:
                    experiments[item.id] = definition
                continue
            dropped.add(id(item))
            errors.append(_duplicate(item, first))
    return dropped


def _duplicate(item: Rule | ExperimentDef, first: Rule | ExperimentDef) -> RuleError:
    optimised = isinstance(first, ExperimentDef) and first.optimised
    if isinstance(item, Rule) or item.optimised:
        if isinstance(first, Rule) or optimised:
            by = f"the optimised rule at {first.where}" if optimised else first.where
            return RuleError(item.file, item.line, f"id is already used by {by}; ids must be "
                             "unique in the folder", item.id, "id")
        return RuleError(item.file, item.line, f'id is already used by experiment "{first.id}" '
                         f"at {first.where}; an optimised rule is counted as an experiment under "
                         "its id, so its id must differ from every [[experiment]]'s", item.id,
                         "id")
    if optimised:
        return RuleError(item.file, item.line, f'experiment "{item.id}": id is already used by '
                         f"the optimised rule at {first.where}; an optimised rule is counted as "
                         "an experiment under its id, so an [[experiment]] must have another id")
    return RuleError(item.file, item.line, f'experiment "{item.id}": id is already used by '
                     f"{first.where}; ids must be unique in the folder")


def _experiments(files: Sequence[FileRules], usable: Mapping[str, Node],
                 broken: Mapping[str, str], errors: list[RuleError], dropped: set[int]
                 ) -> tuple[ExperimentDef, ...]:
    """The experiments whose ids are their own, audiences with their segments resolved."""
    out: list[ExperimentDef] = []
    for file in files:
        for definition in file.experiments:
            if id(definition) in dropped:
                continue
            if definition.audience is not None:
                what = "rule" if definition.optimised else "experiment"
                try:
                    definition = replace(definition,
                                         audience=resolve(definition.audience, usable))
                except Problem as p:
                    errors.append(RuleError(definition.file, definition.line,
                                            f'{what} "{definition.id}": audience: '
                                            + _explain(p, broken, what)))
                    continue
            out.append(definition)
    return _fit_layers(out, errors)


def _fit_layers(definitions: list[ExperimentDef], errors: list[RuleError]
                ) -> tuple[ExperimentDef, ...]:
    """The experiments of a layer share its visitors: their traffic adds up to at most 1.
    Taken in the order assignment lays them out (start, then id), one that would overflow
    is reported and off, so the others keep their slots (and the proxy can plan layers)."""
    used: dict[str, list[ExperimentDef]] = {}
    off: set[str] = set()

    def plan_order(d: ExperimentDef) -> tuple[float, str]:
        start = d.experiment.start
        return (start.timestamp() if start else -math.inf, d.id)

    for definition in sorted(definitions, key=plan_order):
        layer = definition.experiment.layer
        if layer is None:
            continue
        members = used.setdefault(layer, [])
        total = math.fsum((*(m.experiment.traffic for m in members),
                           definition.experiment.traffic))
        if total > 1.0 + WEIGHT_TOLERANCE:
            listed = ", ".join(f"{m.id} = {m.experiment.traffic:g} at {m.where}" for m in members)
            errors.append(RuleError(definition.file, definition.line,
                                    f'experiment "{definition.id}": traffic: '
                                    f"{definition.experiment.traffic:g} would bring layer "
                                    f'"{layer}" to {total:.12g} (with {listed}); the '
                                    "experiments of a layer share at most 1 of its visitors: "
                                    "lower traffic or use another layer"))
            off.add(definition.id)
            continue
        members.append(definition)
    return tuple(d for d in definitions if d.id not in off)


def _segments(files: Sequence[FileRules], errors: list[RuleError]) -> dict[str, Segment]:
    found: dict[str, Segment] = {}
    for file in files:
        for segment in file.segments:
            first = found.get(segment.name)
            if first is not None:
                errors.append(RuleError(segment.file, segment.line, f"is already defined at "
                                        f"{first.file}:{first.line}", segment=segment.name))
                continue
            found[segment.name] = segment
    return found


def _resolve(rule: Rule, usable: Mapping[str, Node], broken: Mapping[str, str],
             errors: list[RuleError]) -> Rule | None:
    if rule.audience is None:
        return rule
    try:
        audience = resolve(rule.audience, usable)
    except Problem as p:
        errors.append(RuleError(rule.file, rule.line, _explain(p, broken, "rule"), rule.id,
                                "audience"))
        return None
    return replace(rule, audience=audience, specificity=count(audience))


def _explain(problem: Problem, broken: Mapping[str, str], what: str) -> str:
    name = problem.needle or ""
    if name in broken:
        return (f'segment "{name}" has errors (reported at {broken[name]}), so this {what} is '
                "off until they are fixed")
    return problem.message
