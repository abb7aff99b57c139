"""Editors' regular expressions, compiled once and refused when they could hang a worker.

Patterns from rule files are matched against values visitors control (paths, UTM
parameters, search terms), and Python's backtracking engine takes exponential time on
nested repetition such as ``(a+)+$`` with a crafted value. Such patterns are refused at
load time (a heuristic: overlapping alternatives like ``(a|aa)+`` are not caught), and a
regex never looks at more than the first MAX_SUBJECT characters of a value.
"""

from __future__ import annotations

import re

from proxy.rules.model import Problem

MAX_REGEX = 500  # characters of a pattern
MAX_SUBJECT = 2048  # characters of a value a pattern looks at


def compile_regex(pattern: str, where: str, flags: int = 0) -> re.Pattern[str]:
    """Compile an editor's regex, refusing nested repetition: ``(a+)+`` takes exponential
    time on a crafted value, and the values (paths, UTM parameters) come from visitors."""
    try:
        compiled = re.compile(pattern, flags)
    except re.error as err:
        raise Problem(where, f"regex {pattern!r} does not compile: {err}", pattern) from None
    if nested_repetition(pattern):
        raise Problem(where, f"regex {pattern!r} repeats a group that itself repeats; such "
                      "patterns can take exponential time on a crafted value: simplify it, "
                      "e.g. (a+)+ to a+", pattern)
    return compiled


_SIMPLE = re.compile(r"\\.|\[(?:\\.|[^\]\\])*+\]")


def nested_repetition(pattern: str) -> bool:
    """A group with an unbounded quantifier inside that is itself repeated without bound:
    ``(a+)+``, ``(\\w*x)*``; ``(\\d{1,3}\\.){3}`` is fine."""
    text = _SIMPLE.sub("x", pattern)  # escapes and character classes: one plain character
    groups: list[bool] = []
    for i, ch in enumerate(text):
        if ch == "(":
            groups.append(False)
        elif groups and _unbounded(text, i):
            groups[-1] = True
        elif ch == ")" and groups:
            repeats = groups.pop()
            if repeats and _unbounded(text, i + 1):
                return True
            if repeats and groups:
                groups[-1] = True
    return False


_OPEN_RANGE = re.compile(r"\{\d*,\}")


def _unbounded(text: str, i: int) -> bool:
    """Is there an unbounded quantifier (``+``, ``*``, ``{n,}``) at ``text[i]``?"""
    return text[i:i + 1] in ("+", "*") or _OPEN_RANGE.match(text, i) is not None
