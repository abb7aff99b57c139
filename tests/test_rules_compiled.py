"""Compiled pages (issue 7): serving from a compiled page is exactly ``html.rewrite``.

The property: for any requests, ``compile_page(source, selectors).rewrite(requests)`` equals
``html.rewrite(source, requests)`` as whole ``Rewrite`` objects (the same output string or
None, the same per-slot counts and problem texts). Checked on the 40 real-world corpus pages
and on synthetic edge cases, each with seeded random rule sets: 1-6 requests whose
selectors come from the page's own ids, classes and tag names (alone, combined, in lists,
with pseudo-classes), each with 1-3 random ops among all actions, in random order, so slots
repeat, nest and overlap. Every page is compiled once for the selectors of all its cases
but one, held out: the cases using it take the fallback. While the compiled cases render,
lexbor is unreachable from proxy.rules.html, so they provably do not parse.
"""

from __future__ import annotations

import gc
import random
import re
import sys
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from selectolax.lexbor import LexborHTMLParser, LexborNode

from proxy.rules import html
from proxy.rules.compiled import CompiledPage, compile_page, slots_of
from proxy.rules.html import Op, Rewrite, SlotRequest
from proxy.rules.model import ACTIONS, TAG_ACTIONS

from .test_rules_support import corpus, corpus_names, load

_IDENT = re.compile(r"-?[A-Za-z_][A-Za-z0-9_-]*")  # a CSS identifier needing no escapes
HTML = ("", "x", '<b class="kx">new</b>', "<p>an open paragraph", "Zoë &amp; <i>co</i>",
        "<!-- note -->", "<div><span>nested</span></div>", "</div>", "\r\nline")
TEXT = ("", "plain", "&lt;b&gt; &amp; text", "Grüße")
VALUES = ("", "v", "a &quot;quoted&quot; &lt;value&gt;", "kx other")
ODD_TAGS = ("html", "head", "body", "title", "script", "style", "meta", "link", "img", "br",
            "input", "textarea", "template", "svg", "table", "tr", "td", "li", "p")


@dataclass
class Vocabulary:
    """What a page offers to build selectors from."""

    ids: list[str]
    classes: list[str]
    tags: list[str]
    attributes: list[str]


def vocabulary(tree: LexborHTMLParser) -> Vocabulary:
    ids: Counter[str] = Counter()
    classes: Counter[str] = Counter()
    tags: Counter[str] = Counter()
    attributes: Counter[str] = Counter()
    for node in tree.css("*"):
        tags[(node.tag or "").lower()] += 1
        attrs = node.attributes
        attributes.update(k.lower() for k in attrs)
        if _IDENT.fullmatch(attrs.get("id") or ""):
            ids[attrs["id"] or ""] += 1
        classes.update(c for c in (attrs.get("class") or "").split() if _IDENT.fullmatch(c))
    return Vocabulary(sorted(ids), sorted(classes), sorted(t for t in tags if _IDENT.fullmatch(t)),
                      sorted(attributes))


def selector(rng: random.Random, words: Vocabulary) -> str:
    """A selector built from the page's own names, in one of many shapes."""
    def one(pool: list[str], prefix: str, fallback: str) -> str:
        return prefix + rng.choice(pool) if pool else fallback

    tag = rng.choice(words.tags) if words.tags and rng.random() < 0.8 else rng.choice(ODD_TAGS)
    ident = one(words.ids, "#", "#kairos-none")
    cls = one(words.classes, ".", ".kairos-none")
    shapes = [ident, ident, ident, cls, cls, tag, f"{tag}{cls}", f"{ident} > *",
              f"{ident} {tag}", f"{tag}:first-child", f"{tag}:nth-of-type(2)",
              f"{tag}:last-child", f"{cls}:not({ident})", f"{cls}, {ident}", f"{tag} + {tag}",
              "#kairos-none", f"[id='{ident[1:]}']", "body > *", f"{tag}:empty"]
    return rng.choice(shapes)


def ops(rng: random.Random, words: Vocabulary) -> tuple[Op, ...]:
    out = []
    for action in rng.sample(ACTIONS, rng.choice((1, 1, 1, 2, 2, 3))):
        if action == "set-text":
            out.append(Op(action, rng.choice(TEXT)))
        elif action in ("set-attribute", "remove-attribute"):
            names = [*words.attributes[:40], "data-kx", "id", "class", "title"]
            out.append(Op(action, rng.choice(VALUES) if action == "set-attribute" else "",
                          rng.choice(names)))
        elif action in TAG_ACTIONS:  # the class actions
            pool = [*words.classes[:40], "kx"]
            out.append(Op(action, classes=tuple(rng.sample(pool, min(len(pool),
                                                                     rng.randint(1, 2))))))
        else:
            out.append(Op(action, rng.choice(HTML) if action not in ("remove",) else ""))
    return tuple(out)


def rule_sets(rng: random.Random, words: Vocabulary, tree: LexborHTMLParser, cases: int,
              most: int) -> list[list[SlotRequest]]:
    """``cases`` random request lists; a selector matching more than ``most`` elements is
    drawn again (each one costs the reference rewrite a locate per element)."""
    counts: dict[str, int] = {}

    def drawn() -> str:
        while True:
            candidate = selector(rng, words)
            if candidate not in counts:
                counts[candidate] = len(tree.css(candidate))
            if counts[candidate] <= most:
                return candidate

    out = []
    for _ in range(cases):
        chosen = [drawn() for _ in range(rng.randint(1, 4))]
        reqs = [SlotRequest(f"r{rng.randint(0, 3)}", rng.choice(chosen), ops(rng, words))
                for _ in range(rng.randint(1, 6))]
        rng.shuffle(reqs)
        out.append(reqs)
    return out


def check(source: str, seed: int, cases: int, most: int,
          monkeypatch: pytest.MonkeyPatch) -> int:
    """Random rule sets on one page: compiled == fresh, fallback included; returns how many
    requests changed something (so a test cannot pass by changing nothing)."""
    rng = random.Random(seed)
    tree = LexborHTMLParser(source)
    sets = rule_sets(rng, vocabulary(tree), tree, cases, most)
    used = list(dict.fromkeys(r.selector for reqs in sets for r in reqs))
    held_out = rng.choice(used)
    compiled_for = [s for s in used if s != held_out]
    rng.shuffle(compiled_for)
    page = compile_page(source, compiled_for)
    assert not page.covers(held_out) and all(page.covers(s) for s in compiled_for)
    expected = [html.rewrite(source, reqs) for reqs in sets]
    covered = [all(page.covers(r.selector) for r in reqs) for reqs in sets]
    got: list[Rewrite | None] = [None if c else page.rewrite(reqs)
                                 for reqs, c in zip(sets, covered, strict=True)]
    with monkeypatch.context() as patched:
        patched.setattr(html, "LexborHTMLParser", _no_parsing)
        got = [page.rewrite(reqs) if c else g for reqs, c, g in zip(sets, covered, got,
                                                                       strict=True)]
        # again: now every slot's edits come from memory (proxy.rules.compiled)
        again = [page.rewrite(reqs) if c else g for reqs, c, g in zip(sets, covered, got,
                                                                         strict=True)]
    for reqs, want, have, remembered in zip(sets, expected, got, again, strict=True):
        assert have == want, reqs
        assert remembered == want, reqs
    assert any(not c for c in covered) and any(covered)
    return sum(r.changed for e in expected for r in e.results)


def _no_parsing(*args: object, **kwargs: object) -> None:
    raise AssertionError("a compiled page was parsed")


def _seed(name: str) -> int:
    return zlib.crc32(name.encode())


@pytest.mark.parametrize("name", corpus_names())
def test_compiled_equals_rewrite_on_real_pages(name: str, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    assert check(corpus(name), _seed(name), cases=10, most=40, monkeypatch=monkeypatch) > 0


LIST = "".join(f'<li class="item{" odd" * (i % 2)}" id="i{i}">item {i}' for i in range(300))
EDGE_CASES = {
    "quirks mode, no doctype": (
        "<HTML><HEAD><TITLE>Old</TITLE></HEAD><BODY BGCOLOR=white><DIV ID=Main CLASS=Box>"
        "<P id=a>one<P ID=b class=box>two</DIV><div id=MAIN class=BOX>case</div>"
        "<TABLE><TR><TD id=c>cell<TD>cell<TR><TD class=box>x</TABLE><font id=f>f</font>"),
    "nested same-tag elements": (
        "<!doctype html><div id=o class=box><div class=box><div class=box id=i>deep</div>"
        "<div class=box>sib</div></div>tail</div><ul id=u><li class=x>a<ul><li class=x id=l>b"
        "</ul><li class=x>c</ul><p id=p1 class=t>one<p class=t>two<div class=t>three</div>"
        "<span class=s><span class=s><span class=s id=sp>in</span></span></span>"),
    "template, svg and math": (
        "<!doctype html><template id=t><div class=in id=tin>hi</div><p class=in>p</p>"
        "</template><svg id=s viewBox='0 0 10 10' class=pic><clipPath id=clip><rect id=r "
        "width=1 height=1/></clipPath><g class=g><circle class=g r=1 /><text id=tx>t</text>"
        "</g><foreignObject id=fo><div class=in>x</div></foreignObject></svg><math id=m>"
        "<mi class=g>x</mi></math><div id=after class=in>after</div>"),
    "void elements": (
        "<!doctype html><p id=p>a<img id=img src=x.png alt='a'><br class=b>b<br class=b/>"
        "</p><input id=in value=\"a>b\"><hr id=hr/><meta name=x content=y><wbr>"
        "<area id=ar><embed class=b src=e><source class=b><col id=col>"),
    "> and tags inside attribute values": (
        "<!doctype html><a id=a title=\"x > y\" href='/?a>b'>link</a>"
        "<div data-x=\"<div id=fake>\" id=real class='c>d'>real</div><p title='<p id=q>'"
        " id=q class=c>q</p><div id=eq data-y=a=b>e</div>"),
    "duplicate ids": (
        "<!doctype html><p id=d class=k>1</p><p id=d class=k>2</p><span id=d>3</span>"
        "<div id=d><p id=d class=k>4</p></div><p id=u class=k>unique</p>"),
    "a selector matching many elements": (
        "<!doctype html><main id=main><ul id=list>" + LIST + "</ul>"
        + "".join(f"<p class=para>para <span class=s>{i}</span></p>" for i in range(200))
        + "</main>"),
    "overlapping slots": (
        "<!doctype html><div id=outer class=slot><p id=inner class=slot>text <b id=b "
        "class=slot>bold</b></p><p class=slot id=second>more</p></div><div id=next "
        "class=slot>next</div>"),
    "comments, scripts and raw text": (
        "<!doctype html><!-- <div id=c1> --><script>var s = '<div id=c1 class=z>';</script>"
        "<div id=c1 class=z>real</div><style>.z{}</style><textarea id=ta class=z><p>t"
        "</textarea><title id=ti>T</title><noscript><p id=ns class=z>n</p></noscript>"
        "<xmp id=x><b>raw</b></xmp><iframe id=if class=z><p>x</p></iframe>"),
    "odd spellings and entities": (
        "<!doctype html>\r\n<DIV Id='A1' CLASS=\"x&amp;y one\" title=\"a\r\nb\">upper</DIV>"
        "<div id = \"sp\" class = one >spaces</div><div id=dup id=other class=one>dup</div>"
        "<p id=unclosed class=one>open<div class=one id=tail>tail"),
    "unclosed at the end of the page": (
        "<!doctype html><html><body><div id=w class=w><section id=s class=w><p id=p>text"),
    "body and head attributes": (
        "<!doctype html><html id=h class=root><head id=hd><title>t</title></head>"
        "<body id=bd class=root><h1 id=t class=root>T</h1></body></html>"),
    "no markup": ("just some text, no tags at all"),
    "empty": (""),
}


@pytest.mark.parametrize("name", list(EDGE_CASES))
def test_compiled_equals_rewrite_on_edge_cases(name: str, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    changed = check(EDGE_CASES[name], _seed(name), cases=30, most=10_000,
                    monkeypatch=monkeypatch)
    assert changed > 0 or name in ("no markup", "empty")


def test_compiled_selectors_cover_known_problems() -> None:
    """Problems found at compile time are reported exactly as the fresh path reports them:
    an element that cannot be located, one that cannot be delimited, <body>'s content."""
    source = EDGE_CASES["body and head attributes"]
    reqs = [SlotRequest("a", "#bd", (Op("set-text", "x"),)),
            SlotRequest("b", "#bd", (Op("add-class", classes=("k",)),)),
            SlotRequest("c", "#t", (Op("replace", "<h2>x</h2>"),)),
            SlotRequest("d", ".root", (Op("append", "<i>x</i>"),))]
    page = compile_page(source, ["#bd", "#t", ".root"])
    result = page.rewrite(reqs)
    assert result == html.rewrite(source, reqs)
    assert "the content of <body> cannot be changed" in result.results[0].problems[0]
    assert result.results[1].changed == 1 and result.results[3].problems


def test_remembered_edits_belong_to_their_page() -> None:
    ops = (Op("set-text", "new"), Op("add-class", classes=("k",)))
    requests = [SlotRequest("r", "#s", ops)]
    first = '<!doctype html><p id=s class="a">old</p>'
    second = '<!doctype html><div><p class=b id=s title="t">other text</p></div>'
    for source in (first, second, first, second):
        assert compile_page(source, ["#s"]).rewrite(requests) == html.rewrite(source, requests)


def test_a_selector_not_compiled_falls_back_to_a_fresh_rewrite() -> None:
    source = EDGE_CASES["overlapping slots"]
    page = compile_page(source, ["#outer", "p", "#outer"])
    assert page.selectors == ("#outer", "p") and not page.covers("#next")
    reqs = [SlotRequest("a", "#next", (Op("replace-content", "n"),)),
            SlotRequest("b", "#outer", (Op("add-class", classes=("k",)),))]
    assert page.rewrite(reqs) == html.rewrite(source, reqs)
    assert page.rewrite(reqs).results[0].changed == 1


def test_an_invalid_selector_is_not_compiled_and_fails_as_before() -> None:
    source = EDGE_CASES["overlapping slots"]
    page = compile_page(source, ["#outer", "p:nth-child(", "[[["])
    assert page.selectors == ("#outer",)
    reqs = [SlotRequest("a", "[[[", (Op("remove"),))]
    with pytest.raises(Exception) as fresh:
        html.rewrite(source, reqs)
    with pytest.raises(fresh.type):
        page.rewrite(reqs)


def test_elements_matched_by_several_selectors_are_stored_once() -> None:
    source = EDGE_CASES["overlapping slots"]
    page = compile_page(source, ["#inner", ".slot", "p", "#kairos-none"])
    assert [len(page.elements(s)) for s in page.selectors] == [1, 5, 2, 0]
    assert page.element_count == 5  # the .slot elements include #inner and both <p>
    assert page.elements("#inner")[0] in page.elements("p")


def test_a_compiled_page_keeps_offsets_not_the_tree_or_copies() -> None:
    """Nothing of lexbor stays alive, no string but the page itself is longer than a
    problem text, and an element costs well under 100 bytes."""
    source = corpus("wikipedia.html")
    page = compile_page(source, ["p", "a", "#content", ".mw-body", "li", "div > span"])
    assert page.element_count > 1000
    total = 0
    for obj in _reachable(page):
        assert not isinstance(obj, LexborNode | LexborHTMLParser)
        if isinstance(obj, str) and obj is not source:
            assert len(obj) < 120, obj[:80]
        if obj is not source:
            total += sys.getsizeof(obj)
    assert total < 100 * page.element_count
    assert all(e.located.attrs == () for s in page.selectors for e in page.elements(s)
               if not isinstance(e.located, str))


def _reachable(root: object) -> Iterator[object]:
    stack, seen = [root], {id(root)}
    while stack:
        obj = stack.pop()
        yield obj
        for ref in gc.get_referents(obj):
            if isinstance(ref, type) or id(ref) in seen:
                continue
            seen.add(id(ref))
            stack.append(ref)


def test_slots_of_collects_each_selector_once_in_order() -> None:
    ruleset, errors = load(
        '[[rule]]\nid = "a"\npages = ["*"]\nslot = "#hero"\nhtml = "x"\n'
        '[[rule]]\nid = "b"\npages = ["*"]\n'
        '[[rule.change]]\nslot = ".cta"\naction = "add-class"\nclass = "k"\n'
        '[[rule.change]]\nslot = "#hero"\ntext = "y"\n')
    assert not errors, errors
    rules = ruleset.candidates("shop.example.com", "/")
    assert slots_of(rules) == ("#hero", ".cta")
    assert isinstance(compile_page("<p id=hero>x", slots_of(rules)), CompiledPage)
