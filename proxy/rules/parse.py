"""One rule file's text -> its rules and segments (S12: tomllib only, size-capped).

A file that is not valid TOML (or too large, or not UTF-8) raises :class:`FileError`, and
the loader keeps that file's last good version (F3). Inside a valid file each rule and
segment stands alone: a bad one is reported and left out, the others load (F4). Messages
name the file, the line (of the offending key where it can be found, else of the rule's
``id``), the rule, the field, and what would be valid.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proxy.rules import placeholders
from proxy.rules.attributes import did_you_mean
from proxy.rules.conditions import parse_audience
from proxy.rules.experiments import ExperimentDef, parse_experiments
from proxy.rules.html import check_selector
from proxy.rules.lines import FileLines
from proxy.rules.model import (
    ACTIONS,
    HTML_ACTIONS,
    OUTER_ACTIONS,
    Change,
    Problem,
    Rule,
    RuleError,
    Segment,
)
from proxy.rules.optimise import OPTIMISE_KEYS, is_optimised, optimised_rule, problem_line
from proxy.rules.pages import parse_pages
from proxy.rules.schedule import parse_schedule

MAX_FILE_BYTES = 1 << 20
TOP_LEVEL = ("rule", "segment", "experiment")
RULE_KEYS = ("id", "description", "pages", "pages_regex", "hosts", "priority", "enabled",
             "audience", "schedule", "change", "slot", "action", "html", "text", "attribute",
             "value", "class")
CHANGE_KEYS = ("slot", "action", "html", "text", "attribute", "value", "class")
_NEEDS = {**{a: ("html",) for a in HTML_ACTIONS}, "set-text": ("text",), "remove": (),
          "set-attribute": ("attribute", "value"), "remove-attribute": ("attribute",),
          "add-class": ("class",), "remove-class": ("class",)}
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_SEGMENT = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_ATTRIBUTE = re.compile(r"[a-zA-Z_:][-a-zA-Z0-9_:.]{0,63}")
_CLASS = re.compile(r"[^\s\"'<>&=`]{1,100}")
_TOML_LINE = re.compile(r"at line (\d+)")


class FileError(Exception):
    """The whole file is unusable; ``error`` says why and where."""

    def __init__(self, error: RuleError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True, slots=True)
class FileRules:
    name: str  # file name in the folder: the order of files
    display: str  # as shown in messages
    rules: tuple[Rule, ...]  # valid rules, segments not yet resolved
    segments: tuple[Segment, ...]
    errors: tuple[RuleError, ...]
    disabled: tuple[str, ...] = ()  # ids of rules with enabled = false
    experiments: tuple[ExperimentDef, ...] = ()  # valid [[experiment]]s, audience unresolved


def parse_file(data: bytes, name: str, display: str) -> FileRules:
    """Parse one file's bytes; raises :class:`FileError` when the file is unusable."""
    if len(data) > MAX_FILE_BYTES:
        raise FileError(RuleError(display, None, f"is {len(data)} bytes; rule files may be at "
                                  f"most {MAX_FILE_BYTES} bytes (split it into several files)"))
    try:
        text = data.decode("utf-8-sig")
        raw = tomllib.loads(text)
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise FileError(RuleError(display, line, "is not UTF-8 text")) from None
    except RecursionError:   # "a = [[[[…" a few hundred deep: tomllib recurses per level
        raise FileError(RuleError(display, None, "is not valid TOML: arrays or tables nested "
                                  "too deeply")) from None
    except tomllib.TOMLDecodeError as err:
        found = _TOML_LINE.search(str(err))
        line = int(found.group(1)) if found else len(text.splitlines()) or None  # "at end"
        raise FileError(RuleError(display, line,
                                  f"is not valid TOML: {err}")) from None
    lines = FileLines(text)
    errors: list[RuleError] = []
    for key in raw:
        if key not in TOP_LEVEL:
            errors.append(RuleError(display, lines.find(0, key), f'unknown top-level key "{key}"'
                                    + did_you_mean(key, TOP_LEVEL) + "; a file holds [[rule]], "
                                    "[segment.<name>] and [[experiment]] tables"))
    optimised: list[ExperimentDef] = []   # rules with optimise = true (proxy.rules.optimise)
    rules, disabled = _rules(raw.get("rule", []), display, name, lines, errors, optimised)
    segments = _segments(raw.get("segment", {}), display, lines, errors)
    experiments = parse_experiments(raw.get("experiment", []), display, name, lines, errors,
                                    _changes)
    return FileRules(name, display, tuple(rules), tuple(segments), tuple(errors),
                     tuple(disabled), (*experiments, *optimised))


def _rules(items: Any, display: str, name: str, lines: FileLines, errors: list[RuleError],
           optimised: list[ExperimentDef]) -> tuple[list[Rule], list[str]]:
    if not isinstance(items, list):
        errors.append(RuleError(display, lines.find(0, "rule"), "rule must be written as "
                                "[[rule]] tables (an array), one per rule"))
        return [], []
    rules: list[Rule] = []
    disabled: list[str] = []
    seen: set[str] = set()
    for position, raw in enumerate(items):
        rid = raw.get("id") if isinstance(raw, Mapping) else None
        start = lines.rule_line(position, rid if isinstance(rid, str) else None)
        label = rid if isinstance(rid, str) else f"#{position + 1}"
        if not isinstance(raw, Mapping):
            errors.append(RuleError(display, start, "must be a table", label))
            continue
        problems = _check_id(rid, seen)
        if not problems and is_optimised(raw):   # run as a bandit (proxy.rules.optimise)
            seen.add(rid)
            problems = _optimised(raw, display, name, position, start, optimised, disabled)
        elif not problems:
            seen.add(rid)
            rule, problems = _rule(raw, display, name, position, start)
            if rule is not None and raw.get("enabled", True) is False:
                disabled.append(rule.id)
            elif rule is not None:
                rules.append(rule)
        errors.extend(RuleError(display, problem_line(lines, start, p), p.message, label,
                                p.field or None) for p in problems)
    return rules, disabled


def _optimised(raw: Mapping[str, Any], display: str, name: str, position: int, line: int,
               out: list[ExperimentDef], disabled: list[str]) -> list[Problem]:
    """An optimised rule: its experiment into ``out``, or its id into ``disabled`` when it
    has ``enabled = false`` (checked all the same, like any rule)."""
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        return [Problem("enabled", "must be true or false", "enabled")]
    try:
        definition = optimised_rule(raw, display, name, position, line, _change)
    except Problem as problem:
        return [problem]
    if enabled:
        out.append(definition)
    else:
        disabled.append(definition.id)
    return []


def _check_id(rid: Any, seen: set[str]) -> list[Problem]:
    if rid is None:
        return [Problem("id", 'is missing: every rule needs a unique id = "..."')]
    if not isinstance(rid, str) or not _ID.fullmatch(rid):
        return [Problem("id", f"{rid!r} is not valid: 1-64 letters, digits, _ . -, starting "
                        "with a letter or digit", "id")]
    if rid in seen:
        return [Problem("id", "is used by an earlier rule in this file; ids must be unique",
                        "id")]
    return []


def _rule(raw: Mapping[str, Any], display: str, name: str, position: int, line: int
          ) -> tuple[Rule | None, list[Problem]]:
    problems: list[Problem] = []
    for key in raw:
        if key in OPTIMISE_KEYS and key != "optimise":
            problems.append(Problem(key, "applies only to an optimised rule: add optimise = "
                                    "true and variants, or remove " + key, key))
        elif key not in RULE_KEYS and key != "optimise":   # optimise = false: a plain rule
            problems.append(Problem("", f'unknown key "{key}"' + did_you_mean(key, RULE_KEYS)
                                    + f"; valid: {', '.join(RULE_KEYS)}", key))

    def attempt(fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Problem as problem:
            problems.append(problem)
            return None

    pages = attempt(parse_pages, raw)
    changes = attempt(_changes, raw)
    audience = attempt(parse_audience, raw["audience"]) if "audience" in raw else None
    schedule = attempt(parse_schedule, raw["schedule"]) if "schedule" in raw else None
    priority = raw.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > 1000:
        problems.append(Problem("priority", f"{priority!r} is not a whole number from -1000 "
                                "to 1000 (higher wins)", "priority"))
    if not isinstance(raw.get("enabled", True), bool):
        problems.append(Problem("enabled", "must be true or false", "enabled"))
    description = raw.get("description", "")
    if not isinstance(description, str):
        problems.append(Problem("description", "must be text", "description"))
    if problems:
        return None, problems
    return Rule(id=raw["id"], file=display, line=line, order=(name, position), pages=pages,
                changes=changes, audience=audience, schedule=schedule, priority=priority,
                description=description), []


def _changes(raw: Mapping[str, Any]) -> tuple[Change, ...]:
    inline = any(k in raw for k in CHANGE_KEYS)
    listed = raw.get("change")
    if inline and listed is not None:
        raise Problem("change", "write the change either in the rule (slot = ...) or in "
                      "[[rule.change]] tables, not both", "change")
    if not inline and listed is None:
        raise Problem("slot", 'is missing: name the element to change with a CSS selector, '
                      'e.g. slot = "#greeting", and what to do, e.g. html = "Hello"', "id")
    if inline:
        return (_change(raw, ""),)
    if not isinstance(listed, list) or not listed or not all(
            isinstance(c, Mapping) for c in listed):
        raise Problem("change", "must be [[rule.change]] tables", "change")
    changes = []
    for i, item in enumerate(listed):
        for key in item:
            if key not in CHANGE_KEYS:
                raise Problem(f"change[{i}]", f'unknown key "{key}"' + did_you_mean(
                    key, CHANGE_KEYS) + f"; valid: {', '.join(CHANGE_KEYS)}", key)
        changes.append(_change(item, f"change[{i}]."))
    _check_combination(changes)
    return tuple(changes)


def _change(raw: Mapping[str, Any], prefix: str) -> Change:
    slot = raw.get("slot")
    if not isinstance(slot, str):
        raise Problem(f"{prefix}slot", 'must be a CSS selector such as "#greeting" or '
                      '"[data-slot=cta]"', "slot")
    why = check_selector(slot)
    if why:
        raise Problem(f"{prefix}slot", f'"{slot}" {why}', slot)
    action = raw.get("action")
    if action is None:
        action = "replace-content" if "html" in raw else "set-text" if "text" in raw else None
    if action not in ACTIONS:
        raise Problem(f"{prefix}action", (f'unknown action "{action}"' + did_you_mean(
            str(action), ACTIONS) if action else "is missing")
            + f"; valid: {', '.join(ACTIONS)}", "action")
    needs = _NEEDS[action]
    for key in ("html", "text", "attribute", "value", "class"):
        if key in needs and key not in raw:
            raise Problem(f"{prefix}{key}", f'is missing: action "{action}" needs '
                          + " and ".join(needs), "action")
        if key not in needs and key in raw:
            raise Problem(f"{prefix}{key}", f'does not apply to action "{action}" (it takes '
                          + (" and ".join(needs) or "nothing") + ")", key)
    selector = " ".join(slot.split())
    if action in HTML_ACTIONS:
        return Change(selector, action, placeholders.parse_html(raw["html"], f"{prefix}html"))
    if action == "set-text":
        return Change(selector, action, placeholders.parse_text(raw["text"], f"{prefix}text"))
    if action in ("set-attribute", "remove-attribute"):
        attribute = raw["attribute"]
        if not isinstance(attribute, str) or not _ATTRIBUTE.fullmatch(attribute):
            raise Problem(f"{prefix}attribute", f"{attribute!r} is not an attribute name",
                          "attribute")
        content = placeholders.parse_attribute(raw["value"], attribute, f"{prefix}value") \
            if action == "set-attribute" else ()
        return Change(selector, action, content, attribute=attribute.lower())
    if action in ("add-class", "remove-class"):
        return Change(selector, action, classes=_classes(raw["class"], f"{prefix}class"))
    return Change(selector, action)


def _classes(value: Any, field: str) -> tuple[str, ...]:
    names = value.split() if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(
            isinstance(n, str) and _CLASS.fullmatch(n) for n in names):
        raise Problem(field, 'must be class names, e.g. class = "is-highlighted" or '
                      'class = ["a", "b"]', "class")
    return tuple(names)


def _check_combination(changes: list[Change]) -> None:
    """Within one rule, one slot gets at most one outer change (replace/remove) and
    nothing else, and at most one content replacement."""
    by_slot: dict[str, list[str]] = {}
    for change in changes:
        by_slot.setdefault(change.selector, []).append(change.action)
    for selector, actions in by_slot.items():
        outer = [a for a in actions if a in OUTER_ACTIONS]
        content = [a for a in actions if a in ("replace-content", "set-text")]
        if (outer and len(actions) > 1) or len(content) > 1:
            raise Problem("change", f'slot "{selector}" gets {", ".join(actions)}: these '
                          "cannot be combined on one element", selector)


def _segments(table: Any, display: str, lines: FileLines, errors: list[RuleError]
              ) -> list[Segment]:
    if not isinstance(table, Mapping):
        errors.append(RuleError(display, lines.find(0, "segment"), "segments must be tables "
                                "like [segment.returning-mobile]"))
        return []
    out = []
    for name, raw in table.items():
        line = lines.segment_line(name)
        if not _SEGMENT.fullmatch(name):
            errors.append(RuleError(display, line, "name is not valid: 1-64 lower-case "
                                    "letters, digits, _ . -", segment=name))
            continue
        try:
            node = parse_audience(raw, "conditions")
        except Problem as p:
            errors.append(RuleError(display, lines.find(line, p.needle), p.message,
                                    field=p.field, segment=name))
            continue
        description = raw.get("description", "") if isinstance(raw, Mapping) else ""
        out.append(Segment(name, node, display, line, description))
    return out
