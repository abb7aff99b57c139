"""``kairos rules check [FOLDER]``: every load error, then which rules (and experiment
arms) act on which page and slot, then the folder's experiments, so an editor sees the
whole folder before the proxy does."""

from __future__ import annotations

import os
from dataclasses import dataclass

from experiments.model import TARGET_KEY, Allocation, Experiment
from proxy.rules import matching, schedule
from proxy.rules.experiments import ArmContent, ExperimentDef
from proxy.rules.loader import RuleLibrary
from proxy.rules.model import Change, Pages, Rule, RuleError
from proxy.rules.pages import glob_regex
from proxy.rules.plan import rank
from proxy.rules.ruleset import RuleSet


@dataclass(frozen=True, slots=True)
class CheckReport:
    ok: bool  # no errors at all
    text: str  # the human-readable report
    errors: tuple[RuleError, ...]
    ruleset: RuleSet


def check_folder(path: str | os.PathLike[str]) -> CheckReport:
    library = RuleLibrary.load(path, quiet=True)
    ruleset, errors = library.ruleset, library.errors
    lines = [str(e) for e in errors]
    if errors:
        lines.append("")
    files = len({r.file for r in ruleset.rules})
    lines.append(f"{library.folder}: {len(ruleset.rules)} rules in {files} files, "
                 f"{len(ruleset.segments)} segments, {len(errors)} errors"
                 + (f", {len(ruleset.disabled)} disabled ({', '.join(ruleset.disabled)})"
                    if ruleset.disabled else "")
                 + "".join(f", {n} {what}" for what, n in (
                     ("experiments", sum(not d.optimised for d in ruleset.experiments)),
                     ("optimised rules", sum(d.optimised for d in ruleset.experiments))) if n))
    lines.extend(shared_slots(ruleset))
    lines.extend(summary(ruleset))
    lines.extend(experiments(ruleset))
    return CheckReport(not errors, "\n".join(lines) + "\n", errors, ruleset)


def shared_slots(ruleset: RuleSet) -> list[str]:
    """Warnings (not errors) for experiments outside one layer that change the same slot on
    pages they may share: the proxy then shows and counts only the first (file order) where
    both run, and the other's results miss those visitors."""
    out = []
    found = ruleset.experiments
    for i, first in enumerate(found):
        for later in found[i + 1:]:
            same_layer = first.experiment.layer is not None and \
                first.experiment.layer == later.experiment.layer
            slots = sorted(_territory(first) & _territory(later))
            if same_layer or not slots or not _may_share_pages(first.pages, later.pages):
                continue
            out.append(f'warning: "{first.id}" ({first.where}) and "{later.id}" '
                       f"({later.where}) both change {', '.join(slots)} on pages they may "
                       f'share; where both run, "{later.id}" is neither shown nor counted '
                       "(/_kairos/why says slot_taken): put them in one layer, or apart")
    return ["", *out] if out else []


def _territory(definition: ExperimentDef) -> set[str]:
    return {change.selector for arm in definition.arms for change in arm.changes}


def _may_share_pages(a: Pages, b: Pages) -> bool:
    """Could one path be a page of both? Exact for literal paths and globs against literal
    paths; two globs (or any regex) are assumed to overlap when their literal prefixes do."""
    if a.hosts and b.hosts and not set(a.hosts) & set(b.hosts):
        return False
    if a.regexes or b.regexes:
        return True
    for x in a.globs:
        for y in b.globs:
            if "*" not in x and glob_regex(y).fullmatch(x):
                return True
            if "*" not in y and glob_regex(x).fullmatch(y):
                return True
            if "*" in x and "*" in y:
                px, py = x.split("*", 1)[0], y.split("*", 1)[0]
                if px.startswith(py) or py.startswith(px):
                    return True
    return False


def summary(ruleset: RuleSet) -> list[str]:
    """Rules per page pattern and slot, best ranked first: experiment arms (which outrank
    every rule for the visitors in them) before the rules, optimised rules' variants at
    their rule's priority."""
    owners: dict[str, ExperimentDef] = {}   # arm rule id ("<experiment>:<arm>") -> owner
    arms: list[Rule] = []
    for definition in ruleset.experiments:
        for content in definition.arms:
            if (arm := definition.arm_rule(content.arm)) is not None:
                owners[arm.id] = definition
                arms.append(arm)
    pages: dict[str, dict[str, list[Rule]]] = {}
    for rule in sorted((*arms, *ruleset.rules), key=rank):
        for pattern in _patterns(rule.pages):
            for slot in rule.slots:
                pages.setdefault(pattern, {}).setdefault(slot, []).append(rule)
    out = []
    for page in sorted(pages):
        out.append(f"\n{page}")
        for slot, rules in pages[page].items():
            out.append(f"  {slot}")
            out.extend(f"    {_line(rule, slot, owners.get(rule.id))}" for rule in rules)
    return out


def _patterns(pages: Pages) -> list[str]:
    hosts = ",".join(pages.hosts)
    return [f"{hosts}{pattern}" if hosts else pattern
            for pattern in (*pages.globs, *(f"regex {r}" for r in pages.regexes))]


def _line(rule: Rule, slot: str, owner: ExperimentDef | None = None) -> str:
    actions = _actions(rule.changes, slot)
    if owner is not None and not owner.optimised:   # the description names experiment, arm
        return f"{rule.description} ({rule.where}): {actions}; outranks every rule"
    name = rule.description if owner is not None else rule.id
    parts = [f"{name} ({rule.where}): {actions}, priority {rule.priority}"]
    audience = owner.audience if owner is not None else rule.audience
    parts.append(f"audience {matching.describe(audience)}" if audience is not None
                 else "everyone")
    if owner is not None:
        parts.append("one variant per visitor, learned"
                     + (f" per {', '.join(owner.segment_by)}" if owner.segment_by else ""))
    if rule.schedule is not None:
        parts.append(schedule.describe(rule.schedule))
    return "; ".join(parts)


def _actions(changes: tuple[Change, ...], slot: str) -> str:
    return ", ".join(c.action for c in changes if c.selector == slot)


def experiments(ruleset: RuleSet) -> list[str]:
    """Each experiment in force: where it runs, its arms and what each shows, its goals,
    allocation, layer, traffic and dates."""
    out = []
    for definition in ruleset.experiments:
        e = definition.experiment
        kind = "optimised rule" if definition.optimised else "experiment"
        out.append(f'\n{kind} "{e.id}" ({definition.where})'
                   + (f": {definition.description}" if definition.description else ""))
        out.append(f"  pages: {', '.join(_patterns(definition.pages))}")
        if definition.audience is not None:
            out.append(f"  audience: {matching.describe(definition.audience)}")
        if definition.optimised:
            out.append(f"  priority {definition.priority}; segments: "
                       + (", ".join(definition.segment_by) or "none (one for everyone)"))
        out.append(f"  {_assignment(e)}")
        out.append("  variants:" if definition.optimised else "  arms:")
        out.extend(f"    {arm.id} {arm.weight:g}: {_shows(definition.content(arm.id))}"
                   for arm in e.arms)
        out.append("  goals: " + "; ".join(
            f"{g.id} ({g.kind} {TARGET_KEY[g.kind]} {g.target})"
            + (" primary" if g.primary else "") for g in e.goals))
    return out


def _assignment(e: Experiment) -> str:
    allocation = ("bandit (weights below until every arm has "
                  f"{e.bandit.min_units} visitors and {e.bandit.min_conversions} "
                  f"conversions, then moved toward the better arms, floor {e.bandit.floor:g})"
                  if e.allocation is Allocation.BANDIT else "fixed")
    return "; ".join((
        f"allocation {allocation}",
        f"layer {e.layer}" if e.layer else "no layer",
        f"traffic {e.traffic:g}",
        f"salt {e.salt}" if e.salt != e.id else "salt = id",
        f"start {e.start.isoformat()}" if e.start else "start: at once",
        f"end {e.end.isoformat()}" if e.end else "end: none"))


def _shows(content: ArmContent) -> str:
    if content.redirect is not None:
        text = f"redirect to {content.redirect}"
    elif not content.changes:
        text = "no changes (the page as the origin sends it)"
    else:
        slots = dict.fromkeys(c.selector for c in content.changes)
        text = "; ".join(f"{slot} {_actions(content.changes, slot)}" for slot in slots)
    return text + (f"; {content.description}" if content.description else "")
