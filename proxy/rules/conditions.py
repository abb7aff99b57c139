"""Audiences: parsing the TOML tables once into condition trees (evaluated by
:mod:`proxy.rules.matching`), resolving segment references, counting specificity.

Editors write conditions as ``attribute = value`` (equals), ``attribute = [a, b]`` (one
of) or ``attribute = { operator = operand, ... }`` (every operator must hold), combined
with ``all``/``any``/``none`` lists and ``segment`` references; the keys of one table
must all hold. Unquoted dotted keys (``visitor.returning = true``) are TOML nested
tables; they are read as the dotted name, so quoting is optional.

Names, operators, operand types and known values are checked here, at load time, so that
``device.kind = "moblie"`` is an error with a suggestion rather than a rule that silently
never matches.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from proxy.rules import attributes as attrs
from proxy.rules.model import AllOf, AnyOf, Condition, Node, NoneOf, Problem, SegmentRef, Test
from proxy.rules.regexes import MAX_REGEX, compile_regex

COMBINATORS = {"all": AllOf, "any": AnyOf, "none": NoneOf}
RULE_KEYS = frozenset(("id", "pages", "pages_regex", "hosts", "priority", "slot", "action",
                       "html", "text", "attribute", "value", "class", "change", "schedule",
                       "enabled"))
_EXAMPLE = '{ "visitor.returning" = true }'


def parse_audience(raw: Any, field: str = "audience") -> Node:
    """The condition tree of an audience table; raises :class:`Problem`."""
    if not isinstance(raw, Mapping) or not raw:
        raise Problem(field, f"must be a table of conditions such as {_EXAMPLE}")
    return _table(raw, field)


def _table(raw: Mapping[str, Any], field: str) -> Node:
    items: list[Node] = []
    for key, value in raw.items():
        if key in COMBINATORS:
            items.append(_combinator(key, value, f"{field}.{key}"))
        elif key == "segment":
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, list) or not names or not all(
                    isinstance(n, str) and n for n in names):
                raise Problem(field, 'segment must be a segment name or a list of names',
                              "segment")
            items.extend(SegmentRef(n) for n in names)
        elif key == "description":
            if not isinstance(value, str):
                raise Problem(field, "description must be text", "description")
        elif key in RULE_KEYS:
            raise Problem(field, f'"{key}" belongs to the rule, not to its audience: in TOML '
                          f"every key after a [rule.audience] header is part of the audience;"
                          f" move it above that header", key)
        else:
            items.extend(_conditions(key, value, field))
    if not items:
        raise Problem(field, f"has no conditions; write one such as {_EXAMPLE}")
    return items[0] if len(items) == 1 else AllOf(tuple(items))


def _combinator(key: str, value: Any, field: str) -> Node:
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, Mapping) for v in value):
        raise Problem(field, f"must be a list of condition tables, e.g. {key} = [{_EXAMPLE}, "
                      '{ "device.kind" = "mobile" }]', key)
    return COMBINATORS[key](tuple(_table(v, f"{field}[{i}]") for i, v in enumerate(value)))


def _conditions(key: str, value: Any, field: str) -> list[Node]:
    known = attrs.unknown(key) is None and not key.startswith("signals.")
    if isinstance(value, Mapping) and not known and not any(k in attrs.OPERATORS
                                                            for k in value):
        if not value:
            raise Problem(field, f'"{key}" has an empty table', key)
        out: list[Node] = []
        for sub, inner in value.items():  # an unquoted dotted key: a nested TOML table
            out.extend(_conditions(f"{key}.{sub}", inner, field))
        return out
    return [condition(key, value, field)]


def condition(name: str, value: Any, field: str = "audience") -> Condition:
    why = attrs.unknown(name)
    if why:
        raise Problem(field, why, name.rsplit(".", 1)[-1])
    kind = attrs.kind(name)
    if isinstance(value, Mapping):
        ops = dict(value)
    elif isinstance(value, list):
        ops = {"in": value}
    else:
        ops = {"equals": value}
    where = f"{field}: {name}"
    tests = []
    for op, operand in ops.items():
        if op not in attrs.OPERATORS:
            raise Problem(where, f'unknown operator "{op}"' + attrs.did_you_mean(
                op, attrs.OPERATORS) + f"; valid: {', '.join(attrs.OPERATORS)}", op)
        if op not in attrs.ALLOWED[kind]:
            raise Problem(where, f'"{op}" does not apply to {_KIND_TEXT[kind]}; use '
                          f"{', '.join(attrs.ALLOWED[kind])}", op)
        tests.append(_test(name, kind, op, operand, where))
    if not tests:
        raise Problem(where, "has no operator", name)
    return Condition(name, tuple(tests))


_KIND_TEXT = {attrs.BOOL: "true/false", attrs.INT: "a number", attrs.TEXT: "text",
              attrs.LIST: "a list", attrs.MAP: "a table", attrs.ANY: "a signal"}


def _test(name: str, kind: str, op: str, operand: Any, where: str) -> Test:
    if op == "exists":
        if not isinstance(operand, bool):
            raise Problem(where, "exists takes true or false", "exists")
        return Test(op, operand)
    if op == "regex":
        if not isinstance(operand, str) or not operand or len(operand) > MAX_REGEX:
            raise Problem(where, f"regex must be a pattern of 1-{MAX_REGEX} characters", op)
        return Test(op, operand, compile_regex(operand, where, re.I))
    if op == "prefix":
        values = _listed(operand, where, op)
        if not all(isinstance(v, str) and v for v in values):
            raise Problem(where, "prefix takes text or a list of texts", op)
        return Test(op, tuple(v.casefold() for v in values), written=tuple(values))
    if op in ("in", "not"):
        values = _listed(operand, where, op)
        members = tuple(_scalar(name, kind, v, where, op) for v in values)
        texts = frozenset(members) if all(isinstance(m, str) for m in members) else None
        return Test(op, members, written=tuple(values), texts=texts)
    value = _scalar(name, kind, operand, where, op)
    if op != "equals" and isinstance(value, bool):
        raise Problem(where, f"{op} takes a number or text", op)
    return Test(op, value, written=operand)


def _listed(operand: Any, where: str, op: str) -> list[Any]:
    values = operand if isinstance(operand, list) else [operand]
    if not values:
        raise Problem(where, f"{op} needs at least one value", op)
    return values


def _scalar(name: str, kind: str, value: Any, where: str, op: str) -> Any:
    if kind == attrs.BOOL and not isinstance(value, bool):
        raise Problem(where, f"{name} is true or false, not {value!r}", op)
    if kind == attrs.INT and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise Problem(where, f"{name} is a number, not {value!r}", op)
    if kind in (attrs.TEXT, attrs.LIST) and not isinstance(value, str):
        raise Problem(where, f"{name} is text: write {str(value)!r} in quotes", op)
    if kind == attrs.ANY and not isinstance(value, str | int | float | bool):
        raise Problem(where, f"expected text, a number or true/false, not {value!r}", op)
    known = attrs.KNOWN_VALUES.get(name)
    if known and isinstance(value, str) and op in ("equals", "in", "not") and (
            value.casefold() not in {k.casefold() for k in known}):
        raise Problem(where, f'"{value}" is not a value of {name}' + attrs.did_you_mean(
            value, known) + f"; valid: {attrs.valid_list(known)}", value)
    return value.casefold() if isinstance(value, str) else value


def resolve(node: Node, segments: Mapping[str, Node], seen: tuple[str, ...] = ()) -> Node:
    """``node`` with every segment reference filled in; raises :class:`Problem` for an
    unknown segment or a cycle."""
    if isinstance(node, SegmentRef):
        if node.name in seen:
            raise Problem("audience", "segments refer to each other in a cycle: "
                          + " -> ".join((*seen, node.name)), node.name)
        if node.name not in segments:
            raise Problem("audience", f'unknown segment "{node.name}"' + attrs.did_you_mean(
                node.name, segments) + (f"; defined: {attrs.valid_list(sorted(segments))}"
                                        if segments else "; no segments are defined"),
                node.name)
        return SegmentRef(node.name, resolve(segments[node.name], segments,
                                             (*seen, node.name)))
    if isinstance(node, AllOf | AnyOf | NoneOf):
        return type(node)(tuple(resolve(i, segments, seen) for i in node.items))
    return node


def count(node: Node | None) -> int:
    """How specific an audience is: its conditions, segments expanded."""
    if node is None:
        return 0
    if isinstance(node, Condition):
        return 1
    if isinstance(node, SegmentRef):
        return count(node.node)
    return sum(count(i) for i in node.items)
