"""The parsed form of rule files: frozen dataclasses built once at load time.

Nothing here parses or evaluates; :mod:`proxy.rules.parse` builds these objects from TOML,
:mod:`proxy.rules.conditions`, :mod:`proxy.rules.schedule` and
:mod:`proxy.rules.placeholders` evaluate their parts, and :mod:`proxy.rules.plan` decides
which rules apply to one request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Actions, by what they need: HTML content, text, an attribute, class names, nothing.
HTML_ACTIONS = ("replace-content", "replace", "insert-before", "insert-after", "prepend",
                "append")
ACTIONS = (*HTML_ACTIONS, "set-text", "remove", "set-attribute", "remove-attribute",
           "add-class", "remove-class")
CONTENT_ACTIONS = frozenset(("replace-content", "set-text", "prepend", "append"))
OUTER_ACTIONS = frozenset(("replace", "remove"))
TAG_ACTIONS = frozenset(("set-attribute", "remove-attribute", "add-class", "remove-class"))


@dataclass(frozen=True, slots=True)
class Placeholder:
    """``{geo.city|your city}``: a context attribute, inserted HTML-escaped, or the
    (escaped) default when the visitor has no value for it."""

    name: str
    default: str  # already escaped


# Literal parts are final HTML (text and attribute values were escaped at load time).
Template = tuple["str | Placeholder", ...]


def has_placeholders(template: Template) -> bool:
    return any(isinstance(part, Placeholder) for part in template)


@dataclass(frozen=True, slots=True)
class Change:
    """One slot change: which elements (a CSS selector), what to do, with what."""

    selector: str  # whitespace-normalised: two rules with the same selector share a slot
    action: str  # one of ACTIONS
    content: Template = ()  # HTML, escaped text, or escaped attribute value
    attribute: str = ""  # set-attribute / remove-attribute, lower-case
    classes: tuple[str, ...] = ()  # add-class / remove-class


@dataclass(frozen=True, slots=True)
class Test:
    """One operator of a condition, its operand already normalised (text case-folded,
    a regex compiled)."""

    op: str  # equals, in, not, gt, gte, lt, lte, prefix, regex, exists
    value: Any
    pattern: re.Pattern[str] | None = field(default=None, compare=False)
    written: Any = field(default=None, compare=False)  # the operand as the editor wrote it
    texts: frozenset[str] | None = field(default=None, compare=False)  # in/not: all text


@dataclass(frozen=True, slots=True)
class Condition:
    """``"geo.country" = { in = ["DE", "AT"] }``: every test must hold."""

    attribute: str
    tests: tuple[Test, ...]


@dataclass(frozen=True, slots=True)
class AllOf:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class NoneOf:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class SegmentRef:
    """``segment = "returning-mobile-de"``; ``node`` is filled in when the folder's
    segments are known (None until then, and in a rule that failed to resolve)."""

    name: str
    node: Node | None = None


Node = Condition | AllOf | AnyOf | NoneOf | SegmentRef


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a rule is on, on the visitor's wall clock.

    Naive ``start``/``end`` are the visitor's local time; aware ones (written with an
    offset in TOML) are instants. ``end`` is exclusive. Empty sets mean "any".
    """

    start: datetime | None = None
    end: datetime | None = None
    weekdays: frozenset[int] = frozenset()  # ISO 1 = Monday … 7 = Sunday
    hours: frozenset[int] = frozenset()  # 0-23


@dataclass(frozen=True, slots=True)
class Pages:
    """Where a rule applies: any glob or regex matches the path, on one of the hosts
    (no hosts: every host)."""

    globs: tuple[str, ...] = ()
    regexes: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    file: str  # as shown in messages, e.g. "rules/hero.toml"
    line: int  # of the rule's id (or its [[rule]] header)
    order: tuple[str, int]  # (file name, position in the file): the last tie-breaker
    pages: Pages
    changes: tuple[Change, ...]
    audience: Node | None = None
    schedule: Schedule | None = None
    priority: int = 0
    description: str = ""
    specificity: int = 0  # number of audience conditions, segments expanded

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    slots: tuple[str, ...] = ()  # the selectors it claims, each once, in order (derived)
    # Derived once, read on every view that applies the rule: each slot with its changes,
    # and whether what it shows depends on the visitor (audience, local-time schedule, or
    # a placeholder: then the page must be ``Cache-Control: private``, S6).
    changes_by_slot: tuple[tuple[str, tuple[Change, ...]], ...] = field(
        default=(), init=False, repr=False, compare=False)
    personal: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        slots = tuple(dict.fromkeys(c.selector for c in self.changes))
        object.__setattr__(self, "slots", slots)
        object.__setattr__(self, "changes_by_slot", tuple(
            (slot, tuple(c for c in self.changes if c.selector == slot)) for slot in slots))
        object.__setattr__(self, "personal", (
            self.audience is not None or self.schedule is not None
            or any(has_placeholders(c.content) for c in self.changes)))


@dataclass(frozen=True, slots=True)
class Segment:
    """A named audience defined once (``[segment.returning-mobile-de]``)."""

    name: str
    node: Node
    file: str
    line: int
    description: str = ""


@dataclass(frozen=True, slots=True)
class RuleError:
    """One problem found at load time; ``str()`` is the message editors see."""

    file: str
    line: int | None
    message: str
    rule: str | None = None
    field: str | None = None
    segment: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        parts = [where]
        if self.rule is not None:
            parts.append(f'rule "{self.rule}"')
        if self.segment is not None:
            parts.append(f'segment "{self.segment}"')
        if self.field:
            parts.append(self.field)
        return ": ".join([*parts, self.message])


class Problem(ValueError):
    """A load-time problem in one field of a rule or segment; ``needle`` is text to look
    for in the file to find the line (the offending key or value)."""

    def __init__(self, field: str, message: str, needle: str | None = None) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.needle = needle
