"""A minimal HTML tag scanner over source text: where tags are, not what the tree is.

Why our own scanner next to lexbor: lexbor builds a normalised tree and does not say where
an element came from in the source, yet only a slot's bytes may change (F6). So lexbor
answers *which* elements a selector matches, and this module finds *where* they are:
start tags with their attributes and byte spans, and the end of an element, aware of
comments, raw text (``<script>``, ``<style>`` …), RCDATA, bogus comments, void elements and
the common implied end tags (``<p>``, ``<li>``, table parts). It is deliberately small and
approximate; :mod:`proxy.rules.html` checks every span it finds against lexbor's tree and
leaves a slot alone when the two disagree.

Everything works on ``str`` offsets and is pure.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterator
from typing import NamedTuple


def names(words: str) -> frozenset[str]:
    """A set of tag names written as one space-separated string (easier to read)."""
    return frozenset(words.split())


VOID = names("area base basefont bgsound br col embed frame hr img input keygen link meta "
                 "param source track wbr")
RAW_TEXT = names("script style xmp iframe noembed noframes plaintext")
RCDATA = frozenset(("textarea", "title"))
OPAQUE = RAW_TEXT | RCDATA  # elements whose content is text, not tags
FOREIGN = frozenset(("svg", "math"))


# Possessive quantifiers: no backtracking, so no pathological inputs.
_ATTRS = r"""(?:[\s/]++|[^\s/>][^\s/>=]*+(?:\s*+=\s*+(?:"[^"]*+"|'[^']*+'|[^\s>]*+))?+)*+"""
_ATTR = re.compile(r"""([^\s/>][^\s/>=]*+)(?:\s*+=\s*+("[^"]*+"|'[^']*+'|[^\s>]*+))?+|/""")
TOKEN = re.compile(
    r"<!--(?:-?>|.*?(?:--!?>|\Z))"                              # comment
    r"|<(?P<start>[a-zA-Z][^\s/>]*+)(?P<attrs>" + _ATTRS + r")>?"  # start tag
    r"|</(?P<end>[a-zA-Z][^\s/>]*+)[^>]*+>?"                     # end tag
    r"|<[!?/][^>]*+>?",                                          # doctype, bogus comment
    re.S,
)
CLOSERS: dict[str, re.Pattern[str]] = {
    name: re.compile(r"</" + name + r"(?=[\s/>])[^>]*+>?", re.I) for name in OPAQUE
}
_COMMENT_END = re.compile(r"-?>|.*?(?:--!?>|\Z)", re.S)


class Attr(NamedTuple):
    """One attribute of a start tag (a NamedTuple: pages have thousands, made quickly)."""

    name: str  # lower-case
    value: str | None  # raw source text, quotes removed, entities NOT decoded; None: bare
    start: int  # span of the whole attribute inside the tag text
    end: int
    value_start: int  # span of the value text (quotes excluded); equal to end when bare
    value_end: int


class StartTag(NamedTuple):
    name: str  # lower-case
    start: int  # offsets into the document
    end: int
    attrs: tuple[Attr, ...]  # offsets relative to ``start``
    self_closing: bool

    def attr(self, name: str) -> Attr | None:
        """The first attribute of that name (HTML ignores later duplicates)."""
        return next((a for a in self.attrs if a.name == name), None)


def parse_attrs(tag_text: str, offset: int) -> tuple[tuple[Attr, ...], bool]:
    """Attributes of one start tag (``tag_text`` from ``<``; parsing starts at ``offset``)
    and whether it ends with a self-closing slash."""
    attrs: list[Attr] = []
    closing = False
    limit = len(tag_text) - (1 if tag_text.endswith(">") else 0)
    for m in _ATTR.finditer(tag_text, offset, limit):
        if m.group(0) == "/":
            closing = True
            continue
        closing = False
        raw = m.group(2)
        if raw is None:
            value, v_start, v_end = None, m.end(), m.end()
        elif raw[:1] in "\"'":
            value, v_start, v_end = raw[1:-1], m.start(2) + 1, m.end(2) - 1
        else:
            value, v_start, v_end = raw, m.start(2), m.end(2)
        attrs.append(Attr(m.group(1).lower(), value, m.start(), m.end(), v_start, v_end))
    return tuple(attrs), closing


def start_tag_at(html: str, pos: int) -> StartTag | None:
    """The start tag beginning at ``pos`` (which must be a ``<``), or None."""
    m = TOKEN.match(html, pos)
    if m is None or m.group("start") is None or not m.group(0).endswith(">"):
        return None
    text = m.group(0)
    attrs, closing = parse_attrs(text, 1 + len(m.group("start")))
    return StartTag(m.group("start").lower(), m.start(), m.end(), attrs, closing)


def opaque_regions(html: str) -> list[tuple[int, int]]:
    """Sorted (start, end) spans of comments and of the content and end tag of raw-text and
    RCDATA elements: a ``<div`` in there is text, not a tag.

    One cheap regex finds every ``<`` followed by the first letter of such a tag; the rest
    is checked by hand: on long non-ASCII pages Python's regex engine is several times
    slower with alternatives and IGNORECASE than with one character class.
    """
    regions: list[tuple[int, int]] = []
    pos = 0
    for hit in _OPAQUE_FIRST.finditer(html):
        start = hit.start()
        if start < pos:
            continue  # inside a comment or a script already
        if html.startswith("<!--", start):
            end = _COMMENT_END.match(html, start + 4)
            pos = end.end() if end else len(html)
            regions.append((start, pos))
            continue
        name = _opaque_name(html, start)
        if name is None:
            continue
        tag = TOKEN.match(html, start)
        begin = tag.end() if tag else start + 1  # the start tag itself is a real tag
        close = CLOSERS[name].search(html, begin) if name != "plaintext" else None
        pos = close.end() if close else len(html)
        regions.append((begin, pos))
    return regions


_OPAQUE_FIRST = re.compile(r"<[!sStTxXiInNpP]")


def _opaque_name(html: str, start: int) -> str | None:
    head = html[start + 1:start + 11].lower()
    for name in OPAQUE:
        if head.startswith(name) and head[len(name):len(name) + 1] in _TAG_END_OR_EOF:
            return name
    return None


def find_tag(html: str, name: str) -> list[int]:
    """Positions of ``<name`` followed by a space, ``/`` or ``>``, in lower or upper case
    (mixed case is found by the slower regex only when the two counts disagree)."""
    found: list[int] = []
    for variant in {name, name.upper()}:
        needle = "<" + variant
        pos = html.find(needle)
        while pos >= 0:
            after = html[pos + len(needle):pos + len(needle) + 1]
            if name == "!--" or after in _TAG_END:
                found.append(pos)
            pos = html.find(needle, pos + 1)
    found.sort()
    return found


def find_tag_any_case(html: str, name: str) -> list[int]:
    return [m.start() for m in re.finditer("<" + re.escape(name) + r"(?=[\s/>])", html, re.I)]


def start_tags(html: str, name: str) -> list[int]:
    """Positions of real ``<name`` start tags, by tokenizing the whole page: slow, for when
    the quick searches are fooled (``<p`` inside an attribute value)."""
    return [m.start() for m in tokens(html) if (m.group("start") or "").lower() == name]


_TAG_END = frozenset((" ", "\t", "\n", "\r", "\f", "/", ">"))
_TAG_END_OR_EOF = _TAG_END | {""}


def outside(positions: list[int], regions: list[tuple[int, int]]) -> list[int]:
    """Positions not inside any of the sorted, disjoint ``regions``."""
    if not regions:
        return positions
    starts = [r[0] for r in regions]
    kept = []
    for p in positions:
        i = bisect_right(starts, p) - 1
        if i < 0 or p >= regions[i][1]:
            kept.append(p)
    return kept


def tokens(html: str, pos: int = 0, end: int | None = None) -> Iterator[re.Match[str]]:
    """Tags and comments from ``pos`` on, stepping over the content of raw-text and RCDATA
    elements (that content is yielded as nothing: it is text)."""
    stop = len(html) if end is None else end
    while pos < stop:
        m = TOKEN.search(html, pos, stop)
        if m is None:
            return
        yield m
        pos = m.end()
        name = m.group("start")
        if name is not None:
            name = name.lower()
            if name in OPAQUE:
                if name == "plaintext":
                    return
                close = CLOSERS[name].search(html, pos, stop)
                if close is None:
                    return
                pos = close.start()


HTML_NAMES = names(
    "a abbr address article aside audio b bdi bdo blockquote body button canvas caption cite "
    "code colgroup data datalist dd del details dfn dialog div dl dt em fieldset figcaption "
    "figure footer form h1 h2 h3 h4 h5 h6 head header hgroup html i ins kbd label legend li "
    "main map mark menu meter nav noscript object ol optgroup option output p picture pre "
    "progress q rp rt ruby s samp search section select slot small span strong sub summary "
    "sup table tbody td template tfoot th thead time tr u ul var video"
) | VOID | OPAQUE
