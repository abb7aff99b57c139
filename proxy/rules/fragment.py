"""Checks on an editor's HTML fragment: is it self-contained, and where is each piece of
markup (so placeholders can be refused where escaping is not enough).

Pure functions over :mod:`proxy.rules.scan`'s tokenizer; used at load time only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from proxy.rules.extent import OPTIONAL_END, closes_sibling
from proxy.rules.scan import CLOSERS, FOREIGN, HTML_NAMES, OPAQUE, TOKEN, VOID


@dataclass(frozen=True, slots=True)
class Span:
    """A piece of markup: a tag, a comment, or the text content of a raw-text element."""

    kind: str  # "start", "end", "comment", "other" (doctype, bogus comment) or "raw"
    start: int
    end: int
    name: str = ""  # element name for "start", "end" and "raw"
    complete: bool = True  # False: the input ended inside it (unclosed comment or tag)


def spans(html: str) -> Iterator[Span]:
    """Every non-text piece of a (small) fragment, in order."""
    pos = 0
    while True:
        m = TOKEN.search(html, pos)
        if m is None:
            return
        text = m.group(0)
        pos = m.end()
        if m.group("start") is not None:
            name = m.group("start").lower()
            yield Span("start", m.start(), m.end(), name, text.endswith(">"))
            if name in OPAQUE:
                close = CLOSERS[name].search(html, pos) if name != "plaintext" else None
                stop = close.start() if close else len(html)
                yield Span("raw", pos, stop, name, close is not None)
                pos = stop
        elif m.group("end") is not None:
            yield Span("end", m.start(), m.end(), m.group("end").lower(), text.endswith(">"))
        elif text.startswith("<!--"):
            yield Span("comment", m.start(), m.end(), "", text.endswith(">"))
        else:
            yield Span("other", m.start(), m.end(), "", text.endswith(">"))


def fragment_problem(html: str) -> str | None:
    """Why an editor's fragment would spill into the page around the slot (an unclosed
    element or comment, a stray end tag), or None when it is self-contained."""
    stack: list[str] = []
    for span in spans(html):
        if not span.complete:
            what = "comment" if span.kind == "comment" else f"<{span.name}>"
            return f"{what} is never closed" + (" (missing >)" if span.kind != "raw" else "")
        if span.kind == "start":
            if span.name in ("html", "head", "body", "frameset"):
                return f"<{span.name}> cannot be part of a slot's content"
            while stack and closes_sibling(stack[-1], span.name, []):
                stack.pop()
            text = html[span.start:span.end]
            if span.name in VOID or span.name in OPAQUE or (text.endswith("/>") and (
                    span.name not in HTML_NAMES or any(n in FOREIGN for n in stack))):
                continue
            stack.append(span.name)
        elif span.kind == "end" and span.name not in OPAQUE:
            while stack and stack[-1] != span.name and stack[-1] in OPTIONAL_END:
                stack.pop()
            if not stack or stack[-1] != span.name:
                open_ = f" while <{stack[-1]}> is open" if stack else ""
                return f"</{span.name}> has no matching start tag{open_}"
            stack.pop()
    while stack and stack[-1] in OPTIONAL_END:
        stack.pop()
    if stack:
        return f"<{stack[-1]}> is never closed"
    return None
