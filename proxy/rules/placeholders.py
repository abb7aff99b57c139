"""Placeholders in slot content: ``{geo.city}``, ``{source.campaign|our offer}``.

A value from the request is attacker-controlled (``?utm_campaign=<script>…``), so it is
always inserted HTML-escaped, and only where escaping is enough (S4): in text and in
quoted attribute values. Placeholders inside ``<script>``/``<style>`` (or any raw-text
element), comments, tag or attribute names, unquoted values, URL attributes (``href``,
``src`` …), event handlers (``on*``), ``style`` and ``srcdoc`` are refused at load time.

Syntax: ``{attribute}`` or ``{attribute|default}``; the default (editor text, escaped
like the value) is used when the visitor has no value, else the placeholder renders as
nothing. Braces that do not enclose a dotted attribute name are literal text (CSS
``a{color:red}`` stays as it is); ``&#123;`` writes a literal ``{`` before a name.
"""

from __future__ import annotations

import html as htmllib
import re
from collections.abc import Callable
from typing import Any

from proxy.rules import attributes, fragment, scan
from proxy.rules.model import Placeholder, Problem, Template

PATTERN = re.compile(r"\{([a-z][a-z0-9_]*(?:\.[a-z0-9_-]+)+)(?:\|([^{}]*))?\}")
_LOOSE = re.compile(r"\{\s*+[a-z][a-z0-9_]*+\s*+\.[a-zA-Z0-9_.\s-]*+(?:\|[^{}]*+)?\}")
URL_ATTRIBUTES = scan.names(
    "href src srcset action formaction poster data cite background ping manifest longdesc "
    "usemap codebase archive classid profile icon lowsrc dynsrc xlink:href itemtype "
    "imagesrcset srcdoc style")
MAX_CONTENT = 64 * 1024
_SENTINEL = "\ue000{}\ue001"
_SENTINEL_RE = re.compile("\ue000(\\d+)\ue001")


def parse_html(text: Any, field: str) -> Template:
    """An HTML fragment with placeholders; the fragment must be self-contained."""
    source = _text(text, field)
    parts = _split(source, field)
    marked = "".join(_SENTINEL.format(i) if isinstance(p, Placeholder) else p
                     for i, p in enumerate(parts))
    problem = fragment.fragment_problem(marked)
    if problem:
        raise Problem(field, f"the HTML is not self-contained: {problem}",
                      field.rsplit(".", 1)[-1])
    for span in fragment.spans(marked):
        for hit in _SENTINEL_RE.finditer(marked, span.start, span.end):
            name = _name(parts[int(hit.group(1))])
            _check_context(marked, span, hit.start(), name, field)
    for hit in _SENTINEL_RE.finditer(marked):  # "<{x}" in text: x = "script" opens a tag
        if marked[:hit.start()].endswith(("<", "</", "<!")):
            name = _name(parts[int(hit.group(1))])
            raise Problem(field, f"placeholder {name} follows a <: a value there would start "
                          "a tag", name.strip("{}"))
    return _merge(parts)


def parse_text(text: Any, field: str) -> Template:
    """Plain text with placeholders: everything is escaped."""
    return _merge([htmllib.escape(p) if isinstance(p, str) else p
                   for p in _split(_text(text, field), field)])


def parse_attribute(text: Any, attribute: str, field: str) -> Template:
    """An attribute value with placeholders, escaped for a double-quoted attribute."""
    parts = _split(_text(text, field), field)
    unsafe = _unsafe_attribute(attribute)
    if unsafe and any(isinstance(p, Placeholder) for p in parts):
        raise Problem(field, f"placeholders are not allowed in {unsafe}: a visitor's value "
                      "must never become a URL, script or style", "{")
    return _merge([htmllib.escape(p) if isinstance(p, str) else p for p in parts])


def render(template: Template, get: Callable[[str], Any]) -> str:
    """The template with every placeholder's value escaped (or its default)."""
    if len(template) == 1 and template[0].__class__ is str:
        return template[0]   # no placeholder (literal parts are merged at load time)
    out = []
    for part in template:
        if isinstance(part, str):
            out.append(part)
            continue
        value = get(part.name)
        kind = value.__class__
        if kind is str:
            if value:
                escaped = _escaped.get(value)
                out.append(escaped if escaped is not None else _escape(value))
            else:
                out.append(part.default)
        elif kind is int:   # (not bool) digits and a sign: nothing to escape, never empty
            out.append(str(value))
        else:
            text = _format(value)
            out.append(htmllib.escape(text) if text else part.default)
    return "".join(out)


# Escaped text values, by value: visitors share cities, countries, browsers, and escaping
# one costs ~2.5K instructions, looking it up ~0.5K. Short values only; emptied when full
# (a visitor can send any search term).
_escaped: dict[str, str] = {}
ESCAPED_VALUES = 4096
MAX_ESCAPED_VALUE = 100


def _escape(value: str) -> str:
    escaped = htmllib.escape(value)
    if len(value) <= MAX_ESCAPED_VALUE:
        if len(_escaped) >= ESCAPED_VALUES:
            _escaped.clear()
        _escaped[value] = escaped
    return escaped


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(_format(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _text(text: Any, field: str) -> str:
    if not isinstance(text, str):
        raise Problem(field, "must be text (in quotes; ''' for several lines)")
    if len(text) > MAX_CONTENT:
        raise Problem(field, f"is {len(text)} characters long; at most {MAX_CONTENT}")
    return text


def _split(text: str, field: str) -> list[str | Placeholder]:
    parts: list[str | Placeholder] = []
    pos = 0
    for m in PATTERN.finditer(text):
        _literal(text[pos:m.start()], field, parts)
        why = attributes.unknown(m.group(1))
        if why:
            raise Problem(field, f"placeholder {m.group(0)}: {why}", m.group(1))
        parts.append(Placeholder(m.group(1), htmllib.escape(m.group(2) or "")))
        pos = m.end()
    _literal(text[pos:], field, parts)
    return parts


def _literal(text: str, field: str, parts: list[str | Placeholder]) -> None:
    loose = _LOOSE.search(text)
    if loose and not _in_raw_text(text, loose.start()):
        raise Problem(field, f"{loose.group(0)!r} looks like a placeholder but is not one: "
                      "write {attribute} or {attribute|default} without spaces, e.g. "
                      "{geo.city|your city}", loose.group(0))
    if text:
        parts.append(text)


def _in_raw_text(text: str, pos: int) -> bool:
    """Inside a <script>/<style> of this piece: braces there are code, not placeholders."""
    return any(s.kind == "raw" and s.start <= pos < s.end for s in fragment.spans(text))


def _merge(parts: list[str | Placeholder]) -> Template:
    out: list[str | Placeholder] = []
    for part in parts:
        if isinstance(part, str) and out and isinstance(out[-1], str):
            out[-1] += part
        else:
            out.append(part)
    return tuple(out)


def _name(part: str | Placeholder) -> str:
    return "{" + part.name + "}" if isinstance(part, Placeholder) else "{}"


def _check_context(marked: str, span: fragment.Span, pos: int, name: str, field: str) -> None:
    where = None
    if span.kind == "raw" and span.name in scan.RAW_TEXT:
        where = f"inside <{span.name}>"
    elif span.kind in ("comment", "other"):
        where = "inside a comment"
    elif span.kind == "end":
        where = "inside an end tag"
    elif span.kind == "start":
        where = _tag_context(marked[span.start:span.end], span.name, pos - span.start)
    if where:
        raise Problem(field, f"placeholder {name} is {where}; placeholders may only stand in "
                      "text or in quoted attribute values that are not URLs, scripts or "
                      "styles", name.strip("{}"))


_RISKY_TAGS = frozenset(("meta", "base", "link", "script", "style", "iframe", "object",
                        "embed", "form"))


def _tag_context(tag: str, name: str, pos: int) -> str | None:
    if name in _RISKY_TAGS:
        return f"in a <{name}> tag"
    attrs, _ = scan.parse_attrs(tag, 1 + len(name))
    for attr in attrs:
        if attr.value_start <= pos < attr.value_end and attr.value is not None:
            if tag[attr.value_start - 1] not in "\"'":
                return f'in the unquoted value of "{attr.name}" (put the value in quotes)'
            unsafe = _unsafe_attribute(attr.name)
            return f"in {unsafe}" if unsafe else None
    return "in a tag name or attribute name"


def _unsafe_attribute(name: str) -> str | None:
    name = name.lower()
    if name.startswith("on"):
        return f'the event handler "{name}"'
    if name in URL_ATTRIBUTES:
        return f'the "{name}" attribute'
    return None
