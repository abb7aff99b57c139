"""Slot rewriting: the only module that knows selectolax.

lexbor (through selectolax) decides which elements a selector matches, exactly as a
browser would; it is never asked to serialise the page, because that would normalise the
origin's markup. Instead each matched element is located in the source text
(:mod:`proxy.rules.scan`), its position cross-checked against lexbor's tree, and only the
bytes of the changed slots are spliced. Anything that cannot be located with certainty is
left alone and reported, so the rest of the page always goes out byte-identical (F6).
"""

from __future__ import annotations

import functools
import html as htmllib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from selectolax.lexbor import LexborHTMLParser, LexborNode, SelectolaxError

from proxy.rules import scan
from proxy.rules.edits import Edit, Op, compose, splice
from proxy.rules.extent import Extent, element_extent
from proxy.rules.model import TAG_ACTIONS
from proxy.values import quick_init


@functools.cache
def _empty_document() -> LexborHTMLParser:
    return LexborHTMLParser("<!doctype html><p>")  # for compiling selectors at load time


def check_selector(selector: str) -> str | None:
    """Why ``selector`` is not a usable CSS selector, or None when lexbor compiles it."""
    if not selector.strip():
        return "is empty"
    if _unbalanced(selector):
        return "has an unclosed bracket, parenthesis or quote"
    try:
        _empty_document().css(selector)
    except SelectolaxError:
        return "is not valid CSS selector syntax"
    return None


def _unbalanced(selector: str) -> bool:
    """lexbor accepts ``a[href`` silently; an editor almost surely meant something else."""
    depth: list[str] = []
    quote = ""
    for ch in selector:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[(":
            depth.append("]" if ch == "[" else ")")
        elif ch in "])" and (not depth or depth.pop() != ch):
            return True
    return bool(depth or quote)


@quick_init
@dataclass(frozen=True, slots=True)
class SlotRequest:
    key: str  # who asks (a rule id), for the report
    selector: str
    ops: tuple[Op, ...]


@dataclass(frozen=True, slots=True)
class SlotResult:
    key: str
    selector: str
    found: int  # elements the selector matched
    changed: int  # elements actually changed
    problems: tuple[str, ...] = ()  # why some matched elements were left alone


class Rewrite:
    """What the requests did to ``source``: ``edits`` (splices on its offsets, none when
    nothing changed) and a report per request. The new page text is spliced only when
    asked for (``html``): a cached page's view splices bytes from its edits instead."""

    __slots__ = ("_html", "edits", "results", "source")

    def __init__(self, source: str, results: tuple[SlotResult, ...],
                 edits: tuple[Edit, ...] = ()) -> None:
        self.source = source
        self.results = results
        self.edits = edits
        self._html: str | None = None

    def __eq__(self, other: object) -> bool:   # what the page became and why, not how
        return isinstance(other, Rewrite) and (self.html, self.results, self.edits) == (
            other.html, other.results, other.edits)

    __hash__ = None   # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Rewrite(edits={self.edits!r}, results={self.results!r})"

    @property
    def html(self) -> str | None:
        """The changed page, or None: nothing changed, send the original bytes."""
        if not self.edits:
            return None
        if self._html is None:
            self._html = splice(self.source, list(self.edits))
        return self._html


def rewrite(source: str, requests: Sequence[SlotRequest]) -> Rewrite:
    """Apply the requests in order (earlier ones win overlaps) and splice the changes."""
    return apply(source, requests, ParsedPage(source).targets)


class Target(Protocol):
    """One element a selector matched, as :func:`apply` needs it: found in the tree on
    demand (:class:`ParsedPage`) or ahead of time (:mod:`proxy.rules.compiled`)."""

    @property
    def tag(self) -> str | None: ...  # lexbor's name, as messages show it (SVG's clipPath)

    def start_tag(self) -> scan.StartTag | str: ...  # located in the source, or why not

    def extent(self, tag: scan.StartTag) -> Extent | str: ...  # where it ends, or why not


TargetEdits = Sequence[Edit] | str   # what target_edits says of one element
Found = TypeVar("Found", bound=Target)   # whichever kind of target ``select`` finds


def apply(source: str, requests: Sequence[SlotRequest],
          select: Callable[[str], Sequence[Found]],
          edits_of: Callable[[str, Sequence[Found], tuple[Op, ...]],
                             Sequence[TargetEdits]] | None = None) -> Rewrite:
    """:func:`rewrite` for any way of finding the elements a selector matches (``select``,
    in document order): the one place where requests become edits and overlaps are
    refused, so a compiled page cannot drift from a freshly parsed one. ``edits_of(selector,
    targets, ops)``, when given, answers :func:`target_edits` for each target (a compiled
    page remembers the answers)."""
    accepted: list[Edit] = []
    results = []
    for request in requests:
        selector = request.selector
        targets = select(selector)
        changed = 0
        problems: list[str] = []
        found = (edits_of(selector, targets, request.ops) if edits_of is not None
                 else [target_edits(source, target, request.ops) for target in targets])
        for target, edits in zip(targets, found, strict=True):
            if isinstance(edits, str):
                problems.append(edits)
            elif not edits:
                continue  # e.g. removing a class the element does not have
            elif accepted and _clashes(edits, accepted):
                problems.append(f"<{target.tag}> overlaps a change made by an earlier rule")
            else:
                accepted.extend(edits)
                changed += 1
        if problems:
            results.append(SlotResult(request.key, selector, len(targets), changed,
                                      tuple(problems)))
            continue
        counts = (request.key, selector, len(targets), changed)
        result = _results.get(counts)
        results.append(result if result is not None else _new_result(counts))
    return Rewrite(source, tuple(results), tuple(accepted))


# Results without problems, shared: the same rule, slot and counts come back on every view,
# and building a frozen dataclass costs ~8K instructions, finding one here ~1K. Emptied
# when full (a reload brings new rule ids).
_results: dict[tuple[str, str, int, int], SlotResult] = {}
RESULTS = 4096


def _new_result(counts: tuple[str, str, int, int]) -> SlotResult:
    result = _results[counts] = SlotResult(*counts)
    if len(_results) > RESULTS:
        _results.clear()
    return result


def _clashes(edits: Sequence[Edit], accepted: list[Edit]) -> bool:
    """Does any of ``edits`` overlap an accepted one? Two insertions never overlap (both go
    in, in order); an insertion overlaps a replacement it falls strictly inside; two
    replacements overlap when their ranges intersect. Plain loops, no call per pair: this
    runs on every view."""
    for start, end, _ in edits:
        for other_start, other_end, _ in accepted:
            if start == end:
                if other_start < start < other_end:   # (two insertions never overlap)
                    return True
            elif other_start == other_end:
                if start < other_start < end:
                    return True
            elif start < other_end and other_start < end:
                return True
    return False


def target_edits(source: str, target: Target, ops: tuple[Op, ...]) -> list[Edit] | str:
    """The splices for ``ops`` on one element, or why it is left alone. Attribute and class
    changes need only the start tag; everything else also where the element ends."""
    tag = target.start_tag()
    if isinstance(tag, str):
        return tag
    extent: Extent | None = None
    for op in ops:
        if op.action not in TAG_ACTIONS:
            found = target.extent(tag)
            if isinstance(found, str):
                return found
            extent = found
            break
    return compose(source, tag, extent, ops)


class _Node:
    """A :class:`Target` located when asked, on a :class:`ParsedPage`."""

    __slots__ = ("node", "page")

    def __init__(self, page: ParsedPage, node: LexborNode) -> None:
        self.page = page
        self.node = node

    @property
    def tag(self) -> str | None:
        return self.node.tag

    def start_tag(self) -> scan.StartTag | str:
        return self.page.locate(self.node)

    def extent(self, tag: scan.StartTag) -> Extent | str:
        return self.page.extent(self.node, tag)


class ParsedPage:
    """One parsed page; caches what several slots on it need."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.tree = LexborHTMLParser(source)
        self._regions: list[tuple[int, int]] | None = None
        self._names: dict[str, tuple[dict[int, int], list[int]]] = {}
        self._attrs: dict[str, dict[frozenset[tuple[str, str]], list[int]]] = {}

    def select(self, selector: str) -> list[LexborNode]:
        return [n for n in self.tree.css(selector) if n.tag and not n.tag.startswith("-")]

    def targets(self, selector: str) -> list[_Node]:
        return [_Node(self, n) for n in self.select(selector)]

    @property
    def regions(self) -> list[tuple[int, int]]:
        if self._regions is None:
            self._regions = scan.opaque_regions(self.source)
        return self._regions

    def locate(self, node: LexborNode) -> scan.StartTag | str:
        """The element's start tag in the source, checked against lexbor's attributes."""
        name = (node.tag or "").lower()  # lexbor keeps SVG's camelCase: clipPath
        attrs = node.attributes
        ident = attrs.get("id")
        position = self._by_id(node, name, ident) if ident else None
        if position is None:
            position = self._by_ordinal(node, name)
        tag = scan.start_tag_at(self.source, position) if position is not None else None
        if tag is None or tag.name != name or not _same_attrs(tag, attrs):
            return f"<{name}> could not be located in the page source"
        return tag

    def _by_id(self, node: LexborNode, name: str, ident: str) -> int | None:
        """Slots usually have an id: find its text, then the start tag around it."""
        hits = self._id_hits(name, ident, (f'id="{ident}"',), 1)  # the usual spelling
        if len(hits) != 1:  # single quotes, no quotes, spaces, upper case: every occurrence
            hits = self._id_hits(name, ident, (ident,), 0)
        if len(hits) > 1:
            hits = scan.outside(hits, self.regions)
        if len(hits) == 1:
            return hits[0]
        twins = [n.mem_id for n in self.tree.tags(name) if n.attributes.get("id") == ident]
        if len(twins) == len(hits) and node.mem_id in twins:
            return hits[twins.index(node.mem_id)]
        return None

    def _id_hits(self, name: str, ident: str, needles: tuple[str, ...], quote: int
                 ) -> list[int]:
        """Start tags named ``name`` whose id attribute's value is where a needle ends."""
        hits = []
        for needle in needles:
            pos = self.source.find(needle)
            while pos >= 0:
                value_at = pos + len(needle) - len(ident) - quote
                lt = self.source.rfind("<", 0, pos)
                tag = scan.start_tag_at(self.source, lt) if lt >= 0 else None
                if tag is not None and tag.name == name and any(
                        a.name == "id" and a.value_start == value_at - lt and a.value == ident
                        for a in tag.attrs):
                    hits.append(lt)
                pos = self.source.find(needle, pos + 1)
        return sorted(hits)

    def _by_ordinal(self, node: LexborNode, name: str) -> int | None:
        """The n-th <name> element of the tree is the n-th <name> start tag of the source,
        when both have as many; else the one start tag with the same attributes."""
        nodes, hits = self._ordinals(name)
        index = nodes.get(node.mem_id)
        if len(nodes) == len(hits) and index is not None:
            return hits[index]
        same = self._by_attrs(name, hits).get(_attr_key(node.attributes), ())
        return same[0] if len(same) == 1 else None

    def _by_attrs(self, name: str, hits: list[int]) -> dict[frozenset[tuple[str, str]], list[int]]:
        """The start tags of ``hits`` by their attributes (as _same_attrs compares them)."""
        found = self._attrs.get(name)
        if found is None:
            found = self._attrs[name] = {}
            for p in hits:
                if (t := scan.start_tag_at(self.source, p)) is not None:
                    found.setdefault(_attr_key(_tag_attrs(t)), []).append(p)
        return found

    def _ordinals(self, name: str) -> tuple[dict[int, int], list[int]]:
        """The <name> elements of the tree (node -> n) and the <name> start tags of the
        source; once per name, as a selector like ``li`` locates hundreds of them."""
        found = self._names.get(name)
        if found is not None:
            return found
        nodes = {n.mem_id: i for i, n in enumerate(self.tree.tags(name))}
        hits = scan.outside(scan.find_tag(self.source, name), self.regions)
        if len(nodes) != len(hits):
            hits = scan.outside(scan.find_tag_any_case(self.source, name), self.regions)
        if len(nodes) != len(hits):  # "<p" inside attribute values: tokenize (slow, rare)
            hits = scan.start_tags(self.source, name)
        self._names[name] = nodes, hits
        return nodes, hits

    def extent(self, node: LexborNode, tag: scan.StartTag) -> Extent | str:
        """Where the element ends, verified: lexbor must read the same element there."""
        if tag.name in ("html", "head", "body"):
            return f"the content of <{tag.name}> cannot be changed; target an element in it"
        ancestors = set()
        parent = node.parent
        while parent is not None and parent.tag and not parent.tag.startswith("-"):
            ancestors.add(parent.tag)
            parent = parent.parent
        names = frozenset(ancestors)
        extent = element_extent(self.source, tag, names, budget=_BUDGET)
        if extent is None:  # a big element: jump to its last descendant, scan from there
            extent = element_extent(self.source, tag, names, self._resume(node, tag))
        if extent is None:
            return f"<{tag.name}> could not be delimited in the page source"
        content = self.source[tag.end:extent.content_end]
        if extent.has_end_tag and ("<" not in content or tag.name in scan.OPAQUE):
            return extent  # text only between an explicit start and end tag: certain
        context = node.parent.tag if node.parent is not None and node.parent.tag else "body"
        space = "svg" if "svg" in ancestors else "math" if "math" in ancestors else "html"
        if space != "html":
            context = space  # lexbor knows no SVG/MathML tag but the root as a context
        try:
            fragment = LexborHTMLParser(self.source[tag.start:extent.end], is_fragment=True,
                                        fragment_tag=context, fragment_namespace=space)
        except ValueError:  # a context lexbor cannot parse fragments in (SVG and MathML)
            fragment = None
        if fragment is None or fragment.html != node.html:
            return f"<{tag.name}> could not be delimited in the page source"
        return extent

    def _resume(self, node: LexborNode, tag: scan.StartTag
                ) -> tuple[scan.StartTag, list[str]] | None:
        """Where to resume scanning a big element: its last descendant element, located
        like any slot (cheap), and the names of the elements open there."""
        path: list[LexborNode] = []
        current = node
        while True:
            child = current.last_child
            while child is not None and not child.is_element_node:
                child = child.prev
            if child is None:
                break
            path.append(child)
            current = child
        if not path:
            return None
        last = self.locate(path[-1])
        if isinstance(last, str) or last.start <= tag.end:
            return None
        return last, [(n.tag or "").lower() for n in path]


_BUDGET = 300  # tags scanned inside an element before jumping to its last descendant
_NEWLINES = re.compile(r"\r\n?")


def _same_attrs(tag: scan.StartTag, attrs: dict[str, str | None]) -> bool:
    return _tag_attrs(tag) == {k.lower(): v or "" for k, v in attrs.items()}


def _tag_attrs(tag: scan.StartTag) -> dict[str, str | None]:
    """The attributes of a start tag as lexbor reads them (the first of duplicates)."""
    seen: dict[str, str | None] = {}
    for a in tag.attrs:
        if a.name not in seen:
            seen[a.name] = htmllib.unescape(_NEWLINES.sub("\n", a.value or ""))
    return seen


def _attr_key(attrs: dict[str, str | None]) -> frozenset[tuple[str, str]]:
    """Equal exactly when _same_attrs would hold between the two attribute sets."""
    return frozenset({k.lower(): v or "" for k, v in attrs.items()}.items())
