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
from proxy.rules.experiments import ArmContent, ExperimentDef
from proxy.rules.model import Problem
from proxy.rules.pages import parse_pages

OPTIMISE_KEYS = ("optimise", "variants", "segment_by", "goal", "bandit")
RULE_KEYS = ("id", "description", "pages", "pages_regex", "hosts", "priority", "enabled",
             "audience", "slot", "action", *OPTIMISE_KEYS)
VARIANT_KEYS = ("id", "slot", "action", "html", "text", "attribute", "value", "class")
MAX_SEGMENT_ATTRIBUTES = 3
MAX_ID = 40   # + "@" + a segment of at most 23 characters (or a 12-digit hash of it) <= 64
_VALUE = re.compile(r"[^a-z0-9_-]+")


def is_optimised(raw: Mapping[str, Any]) -> bool:
    return raw.get("optimise") is True or "variants" in raw


def optimised_rule(raw: Mapping[str, Any], display: str, name: str, position: int, line: int,
                   parse_change: Callable[[Mapping[str, Any], str], Any]) -> ExperimentDef:
    """The experiment an optimised rule runs; raises Problem (or ValueError from
    parse_experiment, already naming the field)."""
    for key in raw:
        if key not in RULE_KEYS:
            raise Problem("", f'unknown key "{key}" in an optimised rule'
                          + did_you_mean(key, RULE_KEYS) + f"; valid: {', '.join(RULE_KEYS)}",
                          key)
    if len(raw["id"]) > MAX_ID:
        raise Problem("id", f"an optimised rule's id may be at most {MAX_ID} characters, "
                      f"this one has {len(raw['id'])}: its segments are counted under "
                      '"<id>@<segment>", which must fit in 64', "id")
    if raw.get("optimise") is not True:
        raise Problem("optimise", "must be true in a rule with variants (or remove variants)",
                      "optimise")
    priority = raw.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > 1000:
        raise Problem("priority", f"{priority!r} is not a whole number from -1000 to 1000",
                      "priority")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise Problem("description", "must be text", "description")
    pages = parse_pages(raw)
    audience = parse_audience(raw["audience"]) if "audience" in raw else None
    variants = _variants(raw, parse_change)
    table: dict[str, Any] = {
        "id": raw["id"], "allocation": "bandit", "goals": [_goal(raw.get("goal"))],
        "arms": [{"id": v.arm, "weight": 1.0 / len(variants)} for v in variants],
    }
    if "bandit" in raw:
        table["bandit"] = raw["bandit"]
    experiment = parse_experiment(table, f'rule "{raw["id"]}"')
    return ExperimentDef(experiment, display, line, (name, position), pages, variants,
                         audience, description, priority=priority,
                         segment_by=_segment_by(raw.get("segment_by", [])), optimised=True)


def _variants(raw: Mapping[str, Any], parse_change: Callable[[Mapping[str, Any], str], Any]
              ) -> tuple[ArmContent, ...]:
    items = raw.get("variants")
    if not isinstance(items, list) or len(items) < 2 or not all(
            isinstance(v, Mapping) for v in items):
        raise Problem("variants", "must be a list of at least 2 tables, each with an id and "
                      'the change, e.g. { id = "short", text = "Shop now" }', "variants")
    out: list[ArmContent] = []
    for i, item in enumerate(items):
        for key in item:
            if key not in VARIANT_KEYS:
                raise Problem(f"variants[{i}]", f'unknown key "{key}"'
                              + did_you_mean(key, VARIANT_KEYS)
                              + f"; valid: {', '.join(VARIANT_KEYS)}", key)
        merged = {k: v for k, v in item.items() if k != "id"}
        merged.setdefault("slot", raw.get("slot"))
        if "action" in raw and "action" not in merged:
            merged["action"] = raw["action"]
        change = parse_change(merged, f"variants[{i}].")
        out.append(ArmContent(str(item.get("id")), (change,)))
    return tuple(out)


def _goal(raw: Any) -> dict[str, Any]:
    if isinstance(raw, str):
        return {"id": "goal", "kind": "page", "url": raw, "primary": True}
    if isinstance(raw, Mapping):
        return {"id": "goal", **raw, "primary": True}
    raise Problem("goal", 'is missing: the conversion to optimise for, e.g. goal = '
                  '"/checkout/complete" (a page) or goal = { kind = "click", selector = '
                  '"#cta" }', "goal")


def _segment_by(raw: Any) -> tuple[str, ...]:
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise Problem("segment_by", 'must be a list of context attributes, e.g. '
                      '["device.kind", "source.class"]', "segment_by")
    if len(names) > MAX_SEGMENT_ATTRIBUTES:
        raise Problem("segment_by", f"has {len(names)} attributes; at most "
                      f"{MAX_SEGMENT_ATTRIBUTES} (each one multiplies the segments, and each "
                      "segment needs its own data)", "segment_by")
    for attribute in names:
        why = unknown(attribute)
        if why:
            raise Problem("segment_by", why, attribute)
    return tuple(names)


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
