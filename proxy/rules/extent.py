"""Where an element ends in the source: the other half of locating a slot.

The start tag is found by :mod:`proxy.rules.scan`; from there the tags are walked with a
small stack, honouring the end tags HTML lets authors leave out (``<p>``, ``<li>``, table
parts, …) and an ancestor's end tag that closes everything inside it. Approximate by
design: :mod:`proxy.rules.html` checks the result against lexbor's tree.
"""

from __future__ import annotations

from typing import NamedTuple

from proxy.rules.scan import (
    CLOSERS,
    FOREIGN,
    HTML_NAMES,
    OPAQUE,
    VOID,
    StartTag,
    names,
    tokens,
)

# Start tags that close an open <p> (HTML Standard, "in body" insertion mode).
P_CLOSERS = names("address article aside blockquote center details dialog dir div dl "
                      "fieldset figcaption figure footer form h1 h2 h3 h4 h5 h6 header hgroup "
                      "hr listing main menu nav ol p pre search section summary table ul xmp "
                      "plaintext li dd dt")
HEADINGS = frozenset(("h1", "h2", "h3", "h4", "h5", "h6"))
_SCOPE_BOUNDARIES = names("applet caption html table td th marquee object template button "
                              "svg math")
# element -> start tags that end it implicitly when it is the innermost open element
_SIBLING_CLOSERS = {
    "li": frozenset(("li",)),
    "dt": frozenset(("dt", "dd")),
    "dd": frozenset(("dt", "dd")),
    "option": frozenset(("option", "optgroup", "hr")),
    "optgroup": frozenset(("optgroup", "hr")),
    "tr": frozenset(("tr", "tbody", "thead", "tfoot")),
    "td": frozenset(("td", "th", "tr", "tbody", "thead", "tfoot")),
    "th": frozenset(("td", "th", "tr", "tbody", "thead", "tfoot")),
    "thead": frozenset(("tbody", "tfoot")),
    "tbody": frozenset(("tbody", "tfoot")),
    "tfoot": frozenset(("tbody",)),
    "caption": frozenset(("tr", "tbody", "thead", "tfoot", "td", "th", "col", "colgroup")),
    "colgroup": frozenset(("tr", "tbody", "thead", "tfoot", "td", "th", "caption")),
    "rb": frozenset(("rb", "rt", "rtc", "rp")),
    "rt": frozenset(("rb", "rt", "rtc", "rp")),
    "rp": frozenset(("rb", "rt", "rtc", "rp")),
    "rtc": frozenset(("rb", "rtc")),
    "a": frozenset(("a",)),
    "button": frozenset(("button",)),
    "nobr": frozenset(("nobr",)),
}
OPTIONAL_END = frozenset(("p", *_SIBLING_CLOSERS)) - {"a", "button", "nobr"}


def closes_sibling(target: str, name: str, stack: list[str]) -> bool:
    if target == "p" and name in P_CLOSERS:
        return not any(n in _SCOPE_BOUNDARIES for n in stack)
    if target in HEADINGS and name in HEADINGS:
        return not stack
    closers = _SIBLING_CLOSERS.get(target)
    if closers is None or name not in closers:
        return False
    return not any(n in _SCOPE_BOUNDARIES or n in ("ul", "ol", "dl", "select", "ruby")
                   for n in stack)


class Extent(NamedTuple):
    """Where an element's content ends and where the whole element ends (after its end
    tag, if it has one)."""

    content_end: int
    end: int

    @property
    def has_end_tag(self) -> bool:
        return self.end > self.content_end


def element_extent(html: str, tag: StartTag, ancestors: frozenset[str],
                   resume: tuple[StartTag, list[str]] | None = None,
                   budget: int | None = None) -> Extent | None:
    """The extent of the element whose start tag is ``tag``; ``ancestors`` are the tag
    names of its open ancestors (an ancestor's end tag closes it implicitly).

    ``resume`` skips the scan of a large element's inside: the start tag of its last
    descendant and the names of the elements open there (below ``tag``, down to and
    including that descendant), as the tree says. With a ``budget``, None when the end is
    not found within that many tags.
    """
    if tag.name in VOID or (tag.self_closing and tag.name not in OPAQUE and _foreign(tag)):
        return Extent(tag.end, tag.end)
    if tag.name in OPAQUE:
        close = CLOSERS[tag.name].search(html, tag.end) if tag.name != "plaintext" else None
        return Extent(close.start(), close.end()) if close else Extent(len(html), len(html))
    target = tag.name
    stack: list[str] = []
    pos = tag.end
    if resume is not None:
        last, stack = resume[0], list(resume[1])
        pos = last.end
        if last.name in VOID or (last.self_closing and _foreign(last)):
            stack.pop()
        elif last.name in OPAQUE:
            stack.pop()
            close = CLOSERS[last.name].search(html, pos)
            pos = close.end() if close else len(html)
    for count, m in enumerate(tokens(html, pos)):
        if budget is not None and count >= budget:
            return None
        start, end = m.group("start"), m.group("end")
        if start is not None:
            name = start.lower()
            if closes_sibling(target, name, stack):
                return Extent(m.start(), m.start())
            if name in VOID or name in OPAQUE:
                continue
            if m.group(0).endswith("/>") and (name not in HTML_NAMES
                                               or any(n in FOREIGN for n in stack)):
                continue
            stack.append(name)
        elif end is not None:
            name = end.lower()
            if name in stack:
                del stack[len(stack) - 1 - stack[::-1].index(name):]
            elif name == target:
                return Extent(m.start(), m.end())
            elif name in ancestors and name not in ("body", "html"):
                return Extent(m.start(), m.start())
    return Extent(len(html), len(html))


def _foreign(tag: StartTag) -> bool:
    """Self-closing only counts in SVG/MathML; we cannot see the namespace here, so trust
    the slash for names that are not HTML elements we know."""
    return tag.name not in HTML_NAMES


