"""Rules with ``optimise = true``: several candidate variants for a slot, and Kairos learns
which one converts best per segment (issue 5, "per-segment optimisation").

An optimised rule is run as a bandit experiment named after the rule: its variants are the
arms (equal planned weights), its ``goal`` the primary goal, its audience and pages the
experiment's, and its priority stays the rule's (it competes with the other rules for the
slot, it does not outrank them like an experiment's arm). ``segment_by`` names the context
attributes whose values make a segment (``["device.kind", "source.class"]``); the bandit
then keeps weights per segment, each shrunk toward the rule's global result
(:func:`experiments.bandit.segment_weights`) so a small segment does not chase noise::

    [[rule]]
    id = "cta-copy"
    pages = ["/"]
    slot = "#cta"
    optimise = true
    segment_by = ["device.kind", "source.class"]
    goal = "/checkout/complete"           # a page (URL glob), or a goal table
    variants = [
      { id = "shop", text = "Shop the collection" },
      { id = "explore", text = "Explore the gear" },
    ]
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from typing import Any

from experiments.model import parse_experiment
from proxy.rules.attributes import did_you_mean, unknown
from proxy.rules.conditions import parse_audience
from proxy.rules.experiments import ArmContent, ExperimentDef, check_goals
from proxy.rules.lines import FileLines
from proxy.rules.model import Problem
from proxy.rules.pages import parse_pages

OPTIMISE_KEYS = ("optimise", "variants", "segment_by", "goal", "bandit")
RULE_KEYS = ("id", "description", "pages", "pages_regex", "hosts", "priority", "enabled",
             "audience", "slot", "action", *OPTIMISE_KEYS)
CONTENT_KEYS = ("action", "html", "text", "attribute", "value", "class")
VARIANT_KEYS = ("id", "description", "slot", *CONTENT_KEYS)
GOAL_KEYS = ("kind", "url", "selector", "event")
MAX_SEGMENT_ATTRIBUTES = 3
MAX_ID = 40   # + "@" + a segment of at most 23 characters (or a 12-digit hash of it) <= 64
_VALUE = re.compile(r"[^a-z0-9_-]+")
_VARIANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")   # an arm id (experiments.model)
_GOAL_FIELD = re.compile(r"goals\[0\](?: \('goal'\))?: ")
# Keys a plain rule has and an optimised one does not, and why.
_NOT_HERE = {
    "schedule": "is not supported in an optimised rule: the bandit compares its variants on "
                "the same visitors at all hours, and a schedule would stop it learning part of "
                "the time; remove schedule (enabled = false turns the rule off, and an "
                "[[experiment]] with start and end runs for a fixed time)",
    "change": "is not used in an optimised rule: each variant carries its own change, e.g. "
              'variants = [{ id = "a", text = "..." }, { id = "b", html = "..." }] (slot and '
              "action given in the rule are shared by the variants)",
    **{key: f"belongs in each variant of an optimised rule: give every variant its own {key}, "
            f'e.g. variants = [{{ id = "a", {key} = "..." }}, {{ id = "b", {key} = "..." }}]'
       for key in ("html", "text", "attribute", "value", "class")},
}


class VariantProblem(Problem):
    """A problem in one variant: its line is that variant's ``id = "..."`` (the
    ``occurrence``-th one with that id in the rule), or of ``needle`` after it."""

    def __init__(self, variant: str | None, occurrence: int, field: str, message: str,
                 needle: str | None = None) -> None:
        super().__init__(field, message, needle)
        self.variant = variant
        self.occurrence = occurrence


def is_optimised(raw: Mapping[str, Any]) -> bool:
    """Is this ``[[rule]]`` table meant as an optimised rule? (``optimise = false`` without
    variants is a plain rule.)"""
    return "variants" in raw or raw.get("optimise", False) is not False


def optimised_rule(raw: Mapping[str, Any], display: str, name: str, position: int, line: int,
                   parse_change: Callable[[Mapping[str, Any], str], Any]) -> ExperimentDef:
    """The experiment an optimised rule runs; raises :class:`Problem` naming the field,
    what is wrong and what would be valid (the rule's ``id`` is already checked)."""
    rid = raw["id"]
    for key in raw:
        if key in _NOT_HERE:
            raise Problem(key, _NOT_HERE[key], key)
        if key not in RULE_KEYS:
            raise Problem("", f'unknown key "{key}" in an optimised rule'
                          + did_you_mean(key, RULE_KEYS) + f"; valid: {', '.join(RULE_KEYS)}",
                          key)
    if len(rid) > MAX_ID:
        raise Problem("id", f"has {len(rid)} characters; an optimised rule's id may have "
                      f"at most {MAX_ID}, because its segments are counted under "
                      '"<id>@<segment>", which must fit in 64: shorten the id', "id")
    optimise = raw.get("optimise")
    if optimise is False:
        raise Problem("optimise", "is false, but the rule has variants: set optimise = true "
                      "to learn which variant converts best, or remove variants and give the "
                      "rule one change (enabled = false turns a rule off)", "optimise")
    if optimise is not True:
        raise Problem("optimise", f"must be true or false, not {optimise!r}" if "optimise"
                      in raw else "is missing: a rule with variants needs optimise = true",
                      "optimise" if "optimise" in raw else "variants")
    priority = raw.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > 1000:
        raise Problem("priority", f"{priority!r} is not a whole number from -1000 to 1000 "
                      "(higher wins)", "priority")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise Problem("description", "must be text", "description")
    pages = parse_pages(raw)
    audience = parse_audience(raw["audience"]) if "audience" in raw else None
    goal = _goal(raw.get("goal"), "goal" in raw)
    segment_by = _segment_by(raw.get("segment_by", []))
    variants = _variants(raw, parse_change)
    table: dict[str, Any] = {
        "id": rid, "allocation": "bandit", "goals": [goal],
        "arms": [{"id": v.arm, "weight": 1.0 / len(variants)} for v in variants],
    }
    if "bandit" in raw:
        table["bandit"] = raw["bandit"]
    where = f'rule "{rid}"'
    try:
        experiment = parse_experiment(table, where)
    except ValueError as exc:   # the goal's or bandit's fields: as the editor wrote them
        message = str(exc).removeprefix(f"{where}: ")
        if _GOAL_FIELD.match(message):
            raise Problem("goal", _GOAL_FIELD.sub("", message, count=1), "goal") from None
        if message.startswith("bandit: "):
            raise Problem("bandit", message.removeprefix("bandit: "), "bandit") from None
        raise Problem("", message.replace("arms", "variants")) from None
    try:
        check_goals(experiment)
    except Problem as problem:
        raise Problem("goal", problem.message, problem.needle) from None
    return ExperimentDef(experiment, display, line, (name, position), pages, variants,
                         audience, description, priority=priority, segment_by=segment_by,
                         optimised=True)


def _variants(raw: Mapping[str, Any], parse_change: Callable[[Mapping[str, Any], str], Any]
              ) -> tuple[ArmContent, ...]:
    example = ('e.g. variants = [{ id = "shop", text = "Shop now" }, '
               '{ id = "explore", text = "Explore" }]')
    items = raw.get("variants")
    if items is None:
        raise Problem("variants", "is missing: an optimised rule needs at least 2 variants to "
                      f"compare, each a table with an id and its change, {example}")
    if not isinstance(items, list) or not all(isinstance(v, Mapping) for v in items):
        raise Problem("variants", "must be a list of tables, each with an id and its change, "
                      + example, "variants")
    if len(items) < 2:
        raise Problem("variants", f"has {len(items)} variant{'' if len(items) == 1 else 's'}; "
                      "an optimised rule needs at least 2 to compare, " + example, "variants")
    out: list[ArmContent] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        vid = item.get("id")
        named = isinstance(vid, str) and bool(_VARIANT_ID.fullmatch(vid))
        occurrence = seen.get(vid, 0) if named else 0
        at = f"variants.{vid}" if named and not occurrence else f"variants[{i}]"

        def problem(field: str, message: str, needle: str | None = None,
                    vid: Any = vid, occurrence: int = occurrence) -> VariantProblem:
            return VariantProblem(vid if isinstance(vid, str) else None, occurrence, field,
                                  message, needle)

        for key in item:
            if key not in VARIANT_KEYS:
                raise problem(at, f'unknown key "{key}"' + did_you_mean(key, VARIANT_KEYS)
                              + f"; a variant takes: {', '.join(VARIANT_KEYS)}", key)
        if vid is None:   # found by the first text it has
            text = next((v for v in item.values() if isinstance(v, str) and v), "variants")
            raise problem(at, 'has no id: give each variant an id = "..." (its results are '
                          "counted under it)", text)
        if not named:
            raise problem(f"{at}.id", f"{vid!r} is not a valid variant id: 1-64 characters "
                          "A-Z a-z 0-9 _ . - starting with a letter or digit", "id")
        if occurrence:
            raise problem(f"{at}.id", f'"{vid}" is the id of an earlier variant too; each '
                          "variant needs its own id (results are counted per variant)", "id")
        seen[vid] = occurrence + 1
        description = item.get("description", "")
        if not isinstance(description, str):
            raise problem(f"{at}.description", "must be text", "description")
        if not any(k in item for k in CONTENT_KEYS) and "action" not in raw:
            raise problem(at, 'shows nothing: give it a change, e.g. text = "..." or html = '
                          '"..." (in the rule\'s slot, or its own slot = "..."), or action = '
                          '"remove"', "id")
        merged = {k: v for k, v in item.items() if k not in ("id", "description")}
        if "slot" not in merged and "slot" not in raw:
            raise problem(f"{at}.slot", 'is missing: give the rule a slot = "#cta" shared by '
                          'the variants, or each variant its own slot = "..."', "id")
        merged.setdefault("slot", raw.get("slot"))
        if "action" in raw and "action" not in merged:
            merged["action"] = raw["action"]
        try:
            change = parse_change(merged, f"{at}.")
        except Problem as p:
            raise problem(p.field, p.message, p.needle) from None
        out.append(ArmContent(vid, (change,), description=description))
    return tuple(out)


def _goal(raw: Any, given: bool) -> dict[str, Any]:
    example = ('goal = "/checkout/complete" (a page, a path glob as in pages) or goal = '
               '{ kind = "click", selector = "#cta" } (kinds: page with url, click with '
               "selector, custom or revenue with event)")
    if not given:
        raise Problem("goal", f"is missing: the conversion to optimise for, e.g. {example}")
    if isinstance(raw, str):
        return {"id": "goal", "kind": "page", "url": raw, "primary": True}
    if not isinstance(raw, Mapping):
        raise Problem("goal", f"{raw!r} is neither a page nor a goal table: {example}", "goal")
    for key in raw:
        if key not in GOAL_KEYS:
            raise Problem("goal", f'unknown key "{key}"' + did_you_mean(key, GOAL_KEYS)
                          + f"; a goal table takes: {', '.join(GOAL_KEYS)}", key)
    if "kind" not in raw:
        raise Problem("goal", f"has no kind: {example}", "goal")
    return {"id": "goal", **raw, "primary": True}


def _segment_by(raw: Any) -> tuple[str, ...]:
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise Problem("segment_by", 'must be a list of context attributes, e.g. '
                      '["device.kind", "source.class"]', "segment_by")
    if len(names) > MAX_SEGMENT_ATTRIBUTES:
        raise Problem("segment_by", f"has {len(names)} attributes; at most "
                      f"{MAX_SEGMENT_ATTRIBUTES} (each one multiplies the segments, and each "
                      "segment needs its own data): keep the ones that matter most",
                      "segment_by")
    for i, attribute in enumerate(names):
        why = unknown(attribute)
        if why:
            raise Problem("segment_by", f"{why}; give context attributes as in audience, "
                          'e.g. "device.kind", "source.class", "geo.country"', attribute)
        if attribute in names[:i]:
            raise Problem("segment_by", f'"{attribute}" is listed twice', "segment_by")
    return tuple(names)


def problem_line(lines: FileLines, start: int, problem: Problem) -> int:
    """The line to report ``problem`` of the rule whose id is at line ``start``: for a
    variant's, that variant's line (or its ``needle``'s after it); else the ``needle``'s."""
    if not isinstance(problem, VariantProblem) or problem.variant is None:
        return lines.find(start, problem.needle)
    begin = max((h for h in lines.blocks if h <= start), default=1)
    end = min((h for h in lines.blocks if h > begin), default=len(lines.lines) + 1)
    own = re.compile(r"(?:^|[\s{,])id\s*=\s*[\"']" + re.escape(problem.variant) + r"[\"']")
    other = re.compile(r"(?:^|[\s{,])id\s*=|\s*\[\[\s*rule\s*\.\s*variants\s*\]\]")
    found = [n for n in range(begin, end) if n != start and own.search(lines.lines[n - 1])]
    if problem.occurrence >= len(found):
        return lines.find(start, "variants")
    at = found[problem.occurrence]
    if "{" in lines.lines[at - 1] or not problem.needle:   # an inline table: one line
        return at
    for number in range(at, end):   # a [[rule.variants]] table: up to the next variant
        if problem.needle in lines.lines[number - 1]:
            return number
        if number > at and other.match(lines.lines[number - 1]):
            break
    return at


def segment_id(experiment: str, attributes: tuple[str, ...], get: Callable[[str], Any]
               ) -> str:
    """The id under which one segment of an optimised rule is counted and weighted:
    ``cta-copy@mobile.search``; a hash of the values when that would exceed 64 characters
    (the longest name a store key and the cookie keep)."""
    values = []
    for attribute in attributes:
        value = get(attribute)
        if isinstance(value, bool):
            text = "yes" if value else "no"
        elif value is None or value == "":
            text = "none"
        else:
            text = _VALUE.sub("-", str(value).lower()).strip("-")[:20] or "other"
        values.append(text)
    key = ".".join(values)
    full = f"{experiment}@{key}"
    if len(full) <= 64:
        return full
    digest = hashlib.blake2s(key.encode(), digest_size=6).hexdigest()
    return f"{experiment}@{digest}"


def base_of(experiment: str) -> str:
    """The rule's experiment id of a segment id (itself for any other id)."""
    return experiment.partition("@")[0]
