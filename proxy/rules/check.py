"""``kairos rules check [FOLDER]``: every load error, then which rules act on which
page and slot, so an editor sees the whole folder before the proxy does."""

from __future__ import annotations

import os
from dataclasses import dataclass

from proxy.rules import matching, schedule
from proxy.rules.loader import RuleLibrary
from proxy.rules.model import Rule, RuleError
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
                    if ruleset.disabled else ""))
    lines.extend(summary(ruleset))
    return CheckReport(not errors, "\n".join(lines) + "\n", errors, ruleset)


def summary(ruleset: RuleSet) -> list[str]:
    """Rules per page pattern and slot, best ranked first."""
    pages: dict[str, dict[str, list[Rule]]] = {}
    for rule in sorted(ruleset.rules, key=rank):
        hosts = ",".join(rule.pages.hosts)
        for pattern in (*rule.pages.globs, *(f"regex {r}" for r in rule.pages.regexes)):
            key = f"{hosts}{pattern}" if hosts else pattern
            for slot in rule.slots:
                pages.setdefault(key, {}).setdefault(slot, []).append(rule)
    out = []
    for page in sorted(pages):
        out.append(f"\n{page}")
        for slot, rules in pages[page].items():
            out.append(f"  {slot}")
            out.extend(f"    {_line(rule, slot)}" for rule in rules)
    return out


def _line(rule: Rule, slot: str) -> str:
    actions = ", ".join(c.action for c in rule.changes if c.selector == slot)
    parts = [f"{rule.id} ({rule.where}): {actions}, priority {rule.priority}"]
    if rule.audience is not None:
        parts.append(f"audience {matching.describe(rule.audience)}")
    else:
        parts.append("everyone")
    if rule.schedule is not None:
        parts.append(schedule.describe(rule.schedule))
    return "; ".join(parts)
