"""Compiled pages: parse a cached page once, serve every personalised view without parsing.

Why (issue 7): :func:`proxy.rules.html.rewrite` parses the whole page with lexbor on every
view (0.3-1.8 ms for 100 KB) and then locates each matched element in the source. When the
page is cached at the edge, all of that is the same for every visitor; only the rendered
content of the ops differs. So :func:`compile_page` does it once, for every selector that
any rule or experiment arm on that page can use (:func:`slots_of` collects them), and
:meth:`CompiledPage.rewrite` then only composes the visitor's ops and splices.

What is kept: the cached ``source`` string itself (referenced, not copied) and, per element
any compiled selector matches, six integers in one array (48 bytes): its start tag's span
and name, where its content and the element end, or, for an element that could not be
located or delimited, the problem text exactly as ``rewrite`` reports it; plus lexbor's
tag name for messages. Names and problem texts are stored once per page, an element
matched by several selectors once, and a selector is a list of element numbers (8 bytes
each). A start tag's attributes are not kept: :func:`proxy.rules.edits.compose` re-reads
the few bytes of the tag when an op changes them. The lexbor tree is dropped as soon as
compiling ends.

Equivalence: ``compile_page(source, selectors).rewrite(requests)`` returns exactly what
``html.rewrite(source, requests)`` returns (the same ``html``, the same ``SlotResult`` tuple)
when every request's selector was compiled. Both go through :func:`proxy.rules.html.apply`,
the one loop that turns requests into edits and refuses overlaps; only where the elements
come from differs, and compiling asks the very same ``ParsedPage.locate``/``extent`` a fresh
rewrite asks (eagerly, for every element, because the ops are not known yet; locating and
delimiting depend on the page alone). tests/test_rules_compiled.py checks the equality on
the 40 real-world corpus pages and synthetic edge cases (quirks mode, nested same-tag
elements, <template>, <svg>, void elements, ``>`` in attribute values, duplicate ids,
overlapping slots, a selector matching hundreds of elements) with hundreds of seeded
random rule sets mixing every action, and that rendering a compiled page never parses.

Fallback: when any request names a selector that was not compiled (a rule added after the
page was cached, a selector lexbor rejected, or one whose compiling raised), the whole
request list goes through ``html.rewrite(source, requests)``: the same answer, at the
price of a parse. :meth:`CompiledPage.covers` tells which selectors are compiled; a cache
recompiles a page when its rules gain selectors (or keeps falling back until it does).

Remembered edits: what the ops of one request do to the few elements of a compiled selector
depends only on the page, the selector and the rendered ops, and visitors in the same
situation get the same ops ("Hello Germany" on every German view), so the answers are
remembered per worker (:data:`REMEMBERED_EDITS` of them, the oldest forgotten first), keyed
by the page's serial number rather than the page, so that an evicted page is not kept
alive. That saves composing and re-reading start tags (~0.06 ms of a 3-slot view). The ops
are known by identity, not value: the rules engine hands visitors in the same situation the
very same request (:data:`proxy.rules.engine._requests`), and hashing ops field by field
cost ~2K instructions an op on every view. The ops are kept with the answer, so their id
cannot pass to other ops meanwhile; equal ops that are not the same object are composed
afresh (the same answer).

Cost (bench/bench_rewrite.py, 3 id slots): compiling costs about one fresh rewrite (median
1.9 ms on the corpus), serving then 0.07-0.2 ms per view, mostly joining the page's text;
compiling for broad selectors (``div``, ``a``: thousands of elements) takes 30-300 ms once.

    page = compile_page(cached_text, slots_of(rules_and_arms_for_this_page))
    result = page.rewrite(requests)  # == html.rewrite(cached_text, requests)
"""

from __future__ import annotations

import itertools
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.rules import html
from proxy.rules.edits import Op
from proxy.rules.extent import Extent
from proxy.rules.html import Rewrite, SlotRequest, TargetEdits
from proxy.rules.model import Rule
from proxy.rules.scan import StartTag


@dataclass(frozen=True, slots=True)
class Element:
    """One element a compiled selector matches: what :func:`proxy.rules.html.apply` asks of
    it, answered at compile time (an :class:`proxy.rules.html.Target`). Made from the
    page's table when asked for; not what the page keeps."""

    tag: str | None  # lexbor's name, as messages show it
    located: StartTag | str  # the start tag without its attributes, or why not located
    ends: Extent | str  # the extent, or why it cannot be delimited ("" if not located)

    def start_tag(self) -> StartTag | str:
        return self.located

    def extent(self, tag: StartTag) -> Extent | str:
        return self.ends


# Per element, six integers in CompiledPage._table (48 bytes): lexbor's tag name (an index
# into _texts), the start tag's name (index), its start (or ~index of the problem text when
# not located), its end * 2 + 1 if self-closing, the content's end (or ~index of the
# problem text when not delimited) and the element's end.
_FIELDS = 6
KEEP_MADE = 8
REMEMBERED_EDITS = 4096
_serials = itertools.count()
# (page serial, selector, id of the ops) -> (the ops, target_edits of each element);
# oldest first. An OrderedDict: forgetting a plain dict's oldest key (del d[next(iter(d))])
# rescans the slots freed before it, ~5 µs once full.
_remembered: OrderedDict[tuple[int, str, int],
                         tuple[tuple[Op, ...], tuple[TargetEdits, ...]]] = OrderedDict()
NOT_KNOWN: Any = object()   # CompiledPage.goals_place before anyone has looked


class CompiledPage:
    """One cached page with the elements of its slots located; see the module docstring."""

    __slots__ = ("_made", "_serial", "_slots", "_table", "_texts", "goals_place", "source")

    def __init__(self, source: str, slots: dict[str, array[int]], table: array[int],
                 texts: tuple[str, ...]) -> None:
        self.source = source
        self._slots = slots  # selector -> indices of its elements in _table, in page order
        self._table = table
        self._texts = texts  # each tag name and problem text once
        # Elements of the selectors that match a few (a slot is usually one element), made
        # once instead of on every view; those matching many stay in the compact table.
        self._made: dict[str, tuple[Element, ...]] = {}
        self._serial = next(_serials)   # names this page in the remembered edits
        # Where the experiments' goals script goes in ``source``: found on the first view
        # that needs it (proxy.personalisation), kept and dropped with the page.
        self.goals_place: Any = NOT_KNOWN

    @property
    def selectors(self) -> tuple[str, ...]:
        """The compiled selectors, in the order they were given."""
        return tuple(self._slots)

    @property
    def element_count(self) -> int:
        """Distinct elements kept (one matched by several selectors counts once)."""
        return len(self._table) // _FIELDS

    def covers(self, selector: str) -> bool:
        """Is ``selector`` compiled (served without parsing the page)?"""
        return selector in self._slots

    def elements(self, selector: str) -> tuple[Element, ...]:
        """The elements a compiled selector matches, in document order (KeyError if not
        compiled)."""
        made = self._made.get(selector)
        if made is None:
            made = tuple(self._element(i) for i in self._slots[selector])
            if len(made) <= KEEP_MADE:
                self._made[selector] = made
        return made

    def rewrite(self, requests: Sequence[SlotRequest]) -> Rewrite:
        """Exactly ``html.rewrite(self.source, requests)``; without parsing when every
        request's selector is compiled, else by that very call (the fallback)."""
        slots = self._slots
        for request in requests:   # (a loop: no generator on every view)
            if request.selector not in slots:
                return html.rewrite(self.source, requests)
        return html.apply(self.source, requests, self.elements, self._edits_of)

    def _edits_of(self, selector: str, targets: Sequence[Element], ops: tuple[Op, ...]
                  ) -> Sequence[TargetEdits]:
        """``html.target_edits`` for each target, remembered (see the module docstring)."""
        if len(targets) > KEEP_MADE:   # broad selectors: too much to keep
            return [html.target_edits(self.source, target, ops) for target in targets]
        key = (self._serial, selector, id(ops))
        known = _remembered.get(key)
        if known is not None and known[0] is ops:
            return known[1]
        found = []
        for target in targets:
            edits = html.target_edits(self.source, target, ops)
            found.append(edits if isinstance(edits, str) else tuple(edits))
        if len(_remembered) >= REMEMBERED_EDITS:
            _remembered.popitem(last=False)
        _remembered[key] = (ops, tuple(found))
        return found

    def _element(self, index: int) -> Element:
        texts = self._texts
        at = index * _FIELDS
        label, name, start, end, content_end, stop = self._table[at:at + _FIELDS]
        tag = texts[label] if label >= 0 else None
        if start < 0:
            return Element(tag, texts[~start], "")
        located = StartTag(texts[name], start, end >> 1, (), bool(end & 1))
        return Element(tag, located,
                       texts[~content_end] if content_end < 0 else Extent(content_end, stop))


def compile_page(source: str, selectors: Iterable[str]) -> CompiledPage:
    """Parse ``source`` once and locate every element each selector matches. A selector
    lexbor rejects, or whose locating raises, is left out (its requests fall back)."""
    page = html.ParsedPage(source)
    texts: dict[str, int] = {}
    table = array("q")
    done: dict[int, int] = {}  # lexbor node -> its index: elements several selectors match
    slots: dict[str, array[int]] = {}
    for selector in selectors:
        if selector in slots:
            continue
        try:
            found = array("q")
            for node in page.select(selector):
                index = done.get(node.mem_id)
                if index is None:
                    row = _row(page, node, texts)
                    index = done[node.mem_id] = len(table) // _FIELDS
                    table.extend(row)
                found.append(index)
        except Exception:  # a request for it falls back: html.rewrite raises it again
            continue
        slots[selector] = found
    return CompiledPage(source, slots, table, tuple(texts))


def _row(page: html.ParsedPage, node: html.LexborNode, texts: dict[str, int]
         ) -> tuple[int, ...]:
    """The six integers of one element (see _FIELDS), from the very calls rewrite makes."""
    def text(value: str) -> int:
        return texts.setdefault(value, len(texts))

    label = -1 if node.tag is None else text(node.tag)
    tag = page.locate(node)
    if isinstance(tag, str):
        return label, -1, ~text(tag), 0, 0, 0
    ends = page.extent(node, tag)  # eagerly: the ops are not known yet
    span = (text(tag.name), tag.start, tag.end * 2 + tag.self_closing)
    if isinstance(ends, str):
        return label, *span, ~text(ends), 0
    return label, *span, ends.content_end, ends.end


def slots_of(rules: Iterable[Rule]) -> tuple[str, ...]:
    """The selectors to compile a page for: every slot of these rules and experiment arms
    (those whose pages match the page), each once, in order."""
    return tuple(dict.fromkeys(selector for rule in rules for selector in rule.slots))
