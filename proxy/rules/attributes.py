"""What rules may ask about the visitor: attribute names, their kinds and known values.

The names come from the visitor context (:data:`proxy.context.model.ATTRIBUTE_NAMES`),
plus ``signals.<name>`` for the open-ended signals from outside. Kinds let the loader
reject ``visitor.returning = "yes"`` or ``time.hour = { prefix = "1" }`` at load time
instead of silently never matching; known values catch ``device.kind = "moblie"``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

from proxy.context.model import ATTRIBUTE_NAMES

BOOL, INT, TEXT, LIST, MAP, ANY = "bool", "int", "text", "list", "map", "any"

_KINDS = {
    BOOL: ("privacy.profiling_allowed", "visitor.new", "visitor.returning", "time.weekend"),
    INT: ("visitor.visit_number", "visitor.pages_this_visit", "visitor.first_seen",
          "visitor.days_since_first_visit", "visitor.days_since_last_visit", "time.hour",
          "time.minute", "time.weekday_number", "time.month", "time.day"),
    LIST: ("language.all", "language.primaries", "time.ranges", "interest.current"),
    MAP: ("interest.counts",),
}
KINDS: dict[str, str] = {name: kind for kind, names in _KINDS.items() for name in names}

# Operators each kind accepts; ``ANY`` (signals, attributes added later) accepts all.
OPERATORS = ("equals", "in", "not", "gt", "gte", "lt", "lte", "prefix", "regex", "exists")
ALLOWED = {
    BOOL: ("equals", "in", "not", "exists"),
    INT: ("equals", "in", "not", "gt", "gte", "lt", "lte", "exists"),
    TEXT: OPERATORS,
    LIST: ("equals", "in", "not", "prefix", "regex", "exists"),
    MAP: ("exists",),
    ANY: OPERATORS,
}

KNOWN_VALUES: dict[str, tuple[str, ...]] = {
    "device.kind": ("mobile", "tablet", "desktop", "bot"),
    "source.class": ("search", "social", "email", "paid", "affiliate", "internal", "direct",
                     "other"),
    "time.part_of_day": ("morning", "afternoon", "evening", "night"),
    "time.weekday": ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
                     "sunday"),
    "privacy.reason": ("", "gpc", "dnt", "opted_out", "no_consent"),
    "geo.continent": ("EU", "NA", "AS", "SA", "AF", "OC", "AN"),
    "geo.source": ("database", "cdn", ""),
    "request.scheme": ("http", "https"),
}

_SIGNAL = re.compile(r"signals\.[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")


def kind(name: str) -> str:
    return KINDS.get(name, TEXT if name in ATTRIBUTE_NAMES else ANY)


def unknown(name: str) -> str | None:
    """Why ``name`` is not an attribute rules can use (with a suggestion), or None."""
    if name in ATTRIBUTE_NAMES:
        return None
    if name.startswith("signals."):
        if _SIGNAL.fullmatch(name):
            return None
        return (f'"{name}" is not a valid signal name: lower-case letters, digits, _ and -, '
                'in dot-separated parts, e.g. "signals.weather.berlin"')
    return f'unknown attribute "{name}"' + did_you_mean(name, [*ATTRIBUTE_NAMES, "signals."])


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``; did you mean "x"?`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f'; did you mean "{close[0]}"?' if close else ""


def valid_list(choices: Iterable[str]) -> str:
    return ", ".join(f'"{c}"' if c else '""' for c in choices)
