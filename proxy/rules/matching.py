"""Evaluating audiences for one visitor, and explaining the outcome in words.

Text comparisons ignore case (operands were case-folded at load time). A missing value
(None, or "" for unknown text) fails every operator except ``not`` and ``exists = false``.
Every miss comes back as a sentence naming the condition, for ``/_kairos/why``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from proxy.rules.model import AllOf, AnyOf, Condition, Node, NoneOf, SegmentRef, Test
from proxy.rules.regexes import MAX_SUBJECT

Getter = Callable[[str], Any]


def evaluate(node: Node, get: Getter) -> str | None:
    """None when the visitor is in the audience, else the reason they are not."""
    if isinstance(node, Condition):
        value = get(node.attribute)
        for test in node.tests:
            if not holds(test, value):
                return f"{node.attribute} is {show(value)}, expected {describe_test(test)}"
        return None
    if isinstance(node, AllOf):
        return next((r for r in (evaluate(i, get) for i in node.items) if r), None)
    if isinstance(node, AnyOf):
        reasons = []
        for item in node.items:
            reason = evaluate(item, get)
            if reason is None:
                return None
            reasons.append(reason)
        return "none of these held: " + "; ".join(reasons)
    if isinstance(node, NoneOf):
        hit = next((i for i in node.items if evaluate(i, get) is None), None)
        return None if hit is None else f"excluded by {describe(hit)}"
    if node.node is None:
        return f'segment "{node.name}" is not defined'
    reason = evaluate(node.node, get)
    return None if reason is None else f'not in segment "{node.name}": {reason}'


def admits(node: Node, get: Getter) -> bool:
    """``evaluate(node, get) is None``, without writing the reason: the request path asks
    this of every candidate rule on every view, and most misses are never read (only
    ``/_kairos/why`` and ``kairos explain`` show them). Plain loops rather than all()/any()
    over generators: a generator costs a frame per call, and this runs per rule per view."""
    if isinstance(node, Condition):
        value = get(node.attribute)
        for test in node.tests:  # noqa: SIM110
            if not holds(test, value):
                return False
        return True
    if isinstance(node, AllOf):
        for item in node.items:  # noqa: SIM110
            if not admits(item, get):
                return False
        return True
    if isinstance(node, AnyOf):
        for item in node.items:  # noqa: SIM110
            if admits(item, get):
                return True
        return False
    if isinstance(node, NoneOf):
        for item in node.items:  # noqa: SIM110
            if admits(item, get):
                return False
        return True
    return node.node is not None and admits(node.node, get)


def attributes(node: Node) -> tuple[str, ...]:
    """The attributes an audience reads, in order, repeats included."""
    if isinstance(node, Condition):
        return (node.attribute,)
    if isinstance(node, SegmentRef):
        return () if node.node is None else attributes(node.node)
    return tuple(name for item in node.items for name in attributes(item))


_COMPARE = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}


def holds(test: Test, value: Any) -> bool:
    op = test.op
    if test.texts is not None and isinstance(value, str):  # the common case, made quick
        return (value.casefold() in test.texts) is (op == "in")
    if op == "exists":
        return (value is not None and value not in ("", [], (), {})) == test.value
    if op == "not":
        return not any(_eq(value, v) for v in test.value)
    if value is None:
        return False
    if op == "equals":
        return _eq(value, test.value)
    if op == "in":
        return any(_eq(value, v) for v in test.value)
    items = value if isinstance(value, list | tuple) else (value,)
    if op == "prefix":
        return any(isinstance(s, str) and s.casefold().startswith(test.value) for s in items)
    if op == "regex":
        assert test.pattern is not None
        return any(test.pattern.search((s if isinstance(s, str) else str(s))[:MAX_SUBJECT])
                   is not None for s in items if not isinstance(s, bool | Mapping))
    if isinstance(value, bool) or isinstance(test.value, str) != isinstance(value, str):
        return False
    if isinstance(value, str):
        return bool(_COMPARE[op](value.casefold(), test.value))
    return isinstance(value, int | float) and bool(_COMPARE[op](value, test.value))


def _eq(value: Any, expected: Any) -> bool:
    if isinstance(value, list | tuple):
        return any(_eq(v, expected) for v in value)
    if isinstance(expected, bool) or isinstance(value, bool):
        return value is expected
    if isinstance(expected, str):
        return isinstance(value, str) and value.casefold() == expected
    return isinstance(value, int | float) and value == expected


_SYMBOL = {"equals": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def show(value: Any) -> str:
    if value is None:
        return "missing"
    if value == "":
        return "empty"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return str(value)


def describe_test(test: Test) -> str:
    written = test.value if test.written is None else test.written
    if test.op in _SYMBOL:
        return f"{_SYMBOL[test.op]} {show(written)}"
    if test.op == "exists":
        return "a value" if test.value else "no value"
    if test.op == "regex":
        return f"to match /{test.value}/"
    if test.op == "prefix":
        return "to start with " + " or ".join(show(v) for v in written)
    joined = ", ".join(show(v) for v in written)
    return f"one of {joined}" if test.op == "in" else f"not {joined}"


def describe(node: Node) -> str:
    """One line an editor can read, for ``kairos rules check`` and ``/_kairos/why``."""
    if isinstance(node, Condition):
        return f"{node.attribute} " + " and ".join(
            ("has " if t.op == "exists" else "") + describe_test(t) for t in node.tests)
    if isinstance(node, SegmentRef):
        return f'segment "{node.name}"'
    inner = "; ".join(describe(i) for i in node.items)
    name = "all" if isinstance(node, AllOf) else "any" if isinstance(node, AnyOf) else "none"
    return f"{name} of ({inner})"
