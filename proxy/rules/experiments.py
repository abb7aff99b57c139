"""``[[experiment]]`` tables of the rules folder -> :class:`ExperimentDef` (issue 5).

An experiment file uses the rule file's vocabulary for *where* and *what*: ``pages``,
``pages_regex``, ``hosts`` and ``audience`` as a rule writes them, and per arm the same
slot changes (``slot`` + ``html`` ..., or ``[[experiment.arms.change]]``) or a
``redirect`` for a split-URL test. Everything about assignment and goals (id, salt, layer,
traffic, weights, allocation, start/end, goals, bandit) is validated by
:func:`experiments.model.parse_experiment`, the single owner of those fields.

Redirect targets come only from the file (S7): a path on this site (``/landing-b``) or an
absolute ``http(s)://`` URL; never anything from the request except its query string, which
the proxy appends. A target whose path is itself one of the experiment's pages is refused at
load, since it would redirect a visitor in that arm forever.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from experiments.model import Experiment, GoalKind, parse_experiment
from proxy.rules.attributes import did_you_mean
from proxy.rules.conditions import parse_audience
from proxy.rules.html import check_selector
from proxy.rules.lines import FileLines
from proxy.rules.model import Change, Node, Pages, Problem, Rule, RuleError
from proxy.rules.pages import glob_regex, parse_pages

# Keys the rules layer owns; the rest of the table goes to parse_experiment.
PLACEMENT_KEYS = ("pages", "pages_regex", "hosts", "audience", "description", "enabled")
ARM_CONTENT_KEYS = ("slot", "action", "html", "text", "attribute", "value", "class", "change",
                    "redirect", "description")
EXPERIMENT_KEYS = ("id", "salt", "layer", "traffic", "arms", "allocation", "start", "end",
                   "goals", "bandit", *PLACEMENT_KEYS)
# Experiments claim their slots ahead of every rule (rule priorities stop at 1000): a
# visitor in an arm must see that arm, or the comparison measures the rules instead.
ARM_PRIORITY = 1_000_000
_URL_CHARS = re.compile(r"[\x21-\x7e]+")
# The event names the beacon and the origin's Kairos-Event header can report
# (proxy.goal_events): a goal waiting for any other name could never convert.
_EVENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


class _ArmProblem(Problem):
    """A problem inside one arm: its line is looked for from the arm's ``id`` on."""

    def __init__(self, arm: str, field: str, message: str, needle: str | None = None) -> None:
        super().__init__(field, message, needle)
        self.arm = arm


@dataclass(frozen=True, slots=True)
class ArmContent:
    """What one arm shows: slot changes (none for a control), or a redirect."""

    arm: str
    changes: tuple[Change, ...] = ()
    redirect: str | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class ExperimentDef:
    """An experiment as the proxy runs it: the pure definition plus where and what."""

    experiment: Experiment
    file: str
    line: int
    order: tuple[str, int]
    pages: Pages
    arms: tuple[ArmContent, ...]   # in the definition's arm order, control first
    audience: Node | None = None
    description: str = ""
    priority: int = ARM_PRIORITY   # an optimised rule keeps its own priority
    segment_by: tuple[str, ...] = ()   # optimised rules: attributes that make a segment
    optimised: bool = False        # from a rule with optimise = true (proxy.rules.optimise)

    @property
    def id(self) -> str:
        return self.experiment.id

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def content(self, arm: str) -> ArmContent:
        return next(a for a in self.arms if a.arm == arm)

    def arm_rule(self, arm: str) -> Rule | None:
        """The arm's slot changes as a rule that outranks every editor's rule, for the
        rules engine to render; None for an arm that changes nothing (the control)."""
        content = self.content(arm)
        if not content.changes:
            return None
        what = (f'optimised rule "{self.id}", variant "{arm}"' if self.optimised
                else f'experiment "{self.id}", arm "{arm}"')
        return Rule(id=f"{self.id}:{arm}", file=self.file, line=self.line, order=self.order,
                    pages=self.pages, changes=content.changes, priority=self.priority,
                    description=what)


def parse_experiments(items: Any, display: str, name: str, lines: FileLines,
                      errors: list[RuleError], parse_changes: Any) -> list[ExperimentDef]:
    """Every valid ``[[experiment]]`` of one file; a bad one is reported and left out.
    ``parse_changes`` is the rule parser's change reader (raises Problem)."""
    if isinstance(items, Mapping):
        items = [items]
    if not isinstance(items, list):
        errors.append(RuleError(display, lines.find(0, "experiment"), "experiment must be "
                                "written as [[experiment]] tables, one per experiment"))
        return []
    out: list[ExperimentDef] = []
    seen: set[str] = set()
    for position, raw in enumerate(items):
        eid = raw.get("id") if isinstance(raw, Mapping) else None
        line = lines.experiment_line(position, eid if isinstance(eid, str) else None)
        label = f'experiment "{eid}"' if isinstance(eid, str) else f"experiment #{position + 1}"
        try:
            if not isinstance(raw, Mapping):
                raise Problem("", "must be a table")
            if isinstance(eid, str) and eid in seen:
                raise Problem("id", "is used by an earlier experiment in this file; ids must "
                              "be unique", "id")
            definition = _experiment(raw, display, name, position, line, label, parse_changes)
        except Problem as problem:
            field = f"{problem.field}: " if problem.field else ""
            at = lines.find_in_arm(line, problem.arm, problem.needle) \
                if isinstance(problem, _ArmProblem) else lines.find(line, problem.needle)
            errors.append(RuleError(display, at, f"{label}: {field}{problem.message}"))
            continue
        except ValueError as exc:   # parse_experiment's message already names the field
            errors.append(RuleError(display, line, str(exc)))
            continue
        seen.add(definition.id)
        if raw.get("enabled", True) is not False:
            out.append(definition)
    return out


def _experiment(raw: Mapping[str, Any], display: str, name: str, position: int, line: int,
                label: str, parse_changes: Any) -> ExperimentDef:
    for key in raw:
        if key not in EXPERIMENT_KEYS:
            raise Problem("", f'unknown key "{key}"' + did_you_mean(key, EXPERIMENT_KEYS)
                          + f"; valid: {', '.join(EXPERIMENT_KEYS)}", key)
    if not isinstance(raw.get("enabled", True), bool):
        raise Problem("enabled", "must be true or false", "enabled")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise Problem("description", "must be text", "description")
    pages = parse_pages(raw)
    audience = parse_audience(raw["audience"]) if "audience" in raw else None
    arms_raw = raw.get("arms")
    core = {k: v for k, v in raw.items() if k not in PLACEMENT_KEYS}
    if isinstance(arms_raw, list):
        valid = ("id", "weight", *ARM_CONTENT_KEYS)
        for i, arm in enumerate(arms_raw):
            arm_id = arm.get("id") if isinstance(arm, Mapping) else None
            for key in arm if isinstance(arm, Mapping) else ():
                if key not in valid:
                    message = (f'unknown key "{key}"' + did_you_mean(key, valid)
                               + f"; valid: {', '.join(valid)}")
                    if isinstance(arm_id, str):
                        raise _ArmProblem(arm_id, f"arms.{arm_id}", message, key)
                    raise Problem(f"arms[{i}]", message, key)
        core["arms"] = [{k: v for k, v in arm.items() if k not in ARM_CONTENT_KEYS}
                        if isinstance(arm, Mapping) else arm for arm in arms_raw]
    experiment = parse_experiment(core, label)
    check_goals(experiment)
    contents = tuple(_arm_content(arm.id, arms_raw[i], pages, parse_changes)
                     for i, arm in enumerate(experiment.arms))
    return ExperimentDef(experiment, display, line, (name, position), pages, contents,
                         audience, description)


def check_goals(experiment: Experiment) -> None:
    """Goals that the proxy could never see converting are refused at load (for
    ``[[experiment]]`` goals and an optimised rule's ``goal`` alike)."""
    for i, goal in enumerate(experiment.goals):
        at = f"goals[{i}] ({goal.id!r})"
        if goal.kind is GoalKind.PAGE and not goal.target.startswith(("/", "*")):
            raise Problem(at, f'url "{goal.target}" is not a path: paths start with "/" '
                          '(a glob as in pages: "/thanks", "/checkout/*")', goal.target)
        if goal.kind is GoalKind.CLICK and (why := check_selector(goal.target)):
            raise Problem(at, f'selector "{goal.target}" {why}; give a CSS selector such '
                          'as "#cta" or "[data-goal=signup]"', goal.target)
        if goal.kind in (GoalKind.CUSTOM, GoalKind.REVENUE) \
                and not _EVENT_NAME.fullmatch(goal.target):
            raise Problem(at, f'event "{goal.target}" is not an event name that '
                          "kairos.track() or Kairos-Event can report: 1-64 characters "
                          "A-Z a-z 0-9 _ . : - starting with a letter or digit", goal.target)


def _arm_content(arm: str, raw: Mapping[str, Any], pages: Pages,
                 parse_changes: Any) -> ArmContent:
    at = f"arms.{arm}"
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise _ArmProblem(arm, f"{at}.description", "must be text", "description")
    redirect = raw.get("redirect")
    has_changes = any(k in raw for k in ARM_CONTENT_KEYS if k not in ("redirect",
                                                                       "description"))
    if redirect is not None:
        if has_changes:
            raise _ArmProblem(arm, at, "an arm either redirects or changes slots, not both: "
                              "remove redirect or the slot changes", "redirect")
        try:
            target = _redirect(redirect, pages, f"{at}.redirect")
        except Problem as problem:
            raise _ArmProblem(arm, problem.field, problem.message, problem.needle) from None
        return ArmContent(arm, (), target, description)
    if not has_changes:
        return ArmContent(arm, (), None, description)   # the page as the origin sends it
    try:
        changes = parse_changes(raw)
    except Problem as problem:
        raise _ArmProblem(arm, f"{at}.{problem.field}", problem.message,
                          problem.needle) from None
    return ArmContent(arm, changes, None, description)


def _redirect(target: Any, pages: Pages, field: str) -> str:
    # A backslash is refused too: browsers read "/\\evil.com" as "//evil.com".
    if not isinstance(target, str) or not _URL_CHARS.fullmatch(target) or "\\" in target:
        raise Problem(field, f"{target!r} is not a URL: give a path on this site such as "
                      '"/landing-b" or an absolute https:// URL (no spaces, no backslashes)',
                      "redirect")
    parts = urlsplit(target)
    if parts.scheme:
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise Problem(field, f'"{target}" must be a path ("/landing-b") or an http(s):// '
                          "URL", "redirect")
    elif not target.startswith("/") or target.startswith("//"):
        raise Problem(field, f'"{target}" must start with a single "/" (a path on this site) '
                      "or be an http(s):// URL", "redirect")
    if "#" in target:   # the proxy appends the visitor's query, which must not follow a #
        raise Problem(field, f'"{target}" has a #fragment; give the target without it '
                      '(the visitor\'s query string is appended to the target)', "redirect")
    # A path on this site, or a URL on one of the experiment's hosts, must not be one of
    # the experiment's pages.
    here = not parts.scheme or (parts.hostname or "") in pages.hosts
    path = parts.path or "/"
    if here and (any(glob_regex(g).fullmatch(path) for g in pages.globs)
                 or any(re.search(p, path) for p in pages.regexes)):
        raise Problem(field, f'"{target}" is itself one of the experiment\'s pages: a '
                      "visitor in this arm would be redirected forever; redirect to a page "
                      "outside pages, or narrow pages", "redirect")
    return target


def with_audience(definition: ExperimentDef, audience: Node | None) -> ExperimentDef:
    return replace(definition, audience=audience)
