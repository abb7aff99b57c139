"""Every action on the 40 real-world corpus pages: the change is exactly where it should be.

For each page two elements with an id are changed with each action. The result is checked
three ways: (1) the bytes before the element's start tag are untouched and nothing at all
changes outside one contiguous region; (2) lexbor reads the output as exactly the tree it
builds when the same change is made in its own DOM (so nothing around the element moved,
appeared or vanished); (3) the selector finds the new content. A page where no slot
matches is returned unchanged (None: the origin's bytes go out).
"""

from __future__ import annotations

import html as htmllib
import re
from collections.abc import Callable

import pytest
from selectolax.lexbor import LexborHTMLParser, LexborNode

from proxy.rules.engine import RulesTransform
from proxy.rules.html import Op, SlotRequest, rewrite

from .test_rules_support import corpus, corpus_names, load, page

NEW = '<b class="kx">NEW</b>'
TARGETS = {"div", "p", "span", "a", "li", "ul", "h1", "h2", "h3", "h4", "section", "article",
           "header", "footer", "nav", "main", "aside", "figure", "form", "label", "button"}
_ID = re.compile(r"[A-Za-z][\w-]*")


def targets(source: str) -> list[str]:
    """Three selectors per page: by id a small element and a middle-sized container, and
    one element without an id by its path (``body > div:nth-child(2) > …``)."""
    tree = LexborHTMLParser(source)
    found = []
    for node in tree.css("body [id]"):
        ident = node.attributes.get("id") or ""
        if (node.tag in TARGETS and _ID.fullmatch(ident) and len(tree.css(f"#{ident}")) == 1
                and not _inside(node, SKIP)):
            found.append((len(node.html or ""), f"#{ident}"))
    found.sort()
    chosen = [found[0][1], found[len(found) // 2][1]] if found else []
    plain = [n for n in tree.css("body p, body li, body h2, body span, body a, body font")
             if "id" not in n.attributes and not _inside(n, SKIP)]
    if plain:
        chosen.append(_path(plain[len(plain) // 2]))
    return chosen


SKIP = {"svg", "template", "select", "noscript", "pre"}


def _path(node: LexborNode) -> str:
    steps = []
    while node.parent is not None and node.tag != "html":
        index = 1 + sum(1 for _ in _element_siblings_before(node))
        steps.append(f"{node.tag}:nth-child({index})")
        node = node.parent
    return "html > " + " > ".join(reversed(steps))


def _element_siblings_before(node: LexborNode) -> list[LexborNode]:
    out = []
    sibling = node.prev
    while sibling is not None:
        if sibling.tag and not sibling.tag.startswith(("-", "!", "_")):
            out.append(sibling)
        sibling = sibling.prev
    return out


def _inside(node: LexborNode, names: set[str]) -> bool:
    parent = node.parent
    while parent is not None:
        if parent.tag in names:
            return True
        parent = parent.parent
    return False


def fragment(markup: str) -> LexborNode:
    node = LexborHTMLParser(markup, is_fragment=True).css_first("b")
    assert node is not None
    return node


def lexbor_does(source: str, selector: str, action: str) -> str:
    """The same change made in lexbor's DOM, serialised: what the output must parse to."""
    tree = LexborHTMLParser(source)
    node = tree.css_first(selector)
    assert node is not None
    attrs = node.attrs
    classes = (node.attributes.get("class") or "").split()
    if action == "replace-content":
        node.inner_html = NEW
    elif action == "set-text":
        node.inner_html = htmllib.escape("<NEW> & text")
    elif action == "replace":
        node.replace_with(fragment(NEW))
    elif action == "remove":
        node.decompose()
    elif action == "insert-before":
        node.insert_before(fragment(NEW))
    elif action == "insert-after":
        node.insert_after(fragment(NEW))
    elif action == "append":
        node.insert_child(fragment(NEW))
    elif action == "prepend":
        if node.first_child is None:
            node.insert_child(fragment(NEW))
        else:
            node.first_child.insert_before(fragment(NEW))
    elif action == "set-attribute":
        attrs["data-kx"] = 'a "quoted" <value> & more'
    elif action == "remove-attribute":
        del attrs[_removable(node)]
    elif action == "add-class":
        attrs["class"] = " ".join([*classes, "kx"])
    elif action == "remove-class":
        attrs["class"] = " ".join(classes[1:])
    return tree.html or ""


def _removable(node: LexborNode) -> str:
    return next((a for a in node.attributes if a != "id"), "id")


def op(action: str, node: LexborNode) -> Op:
    if action in ("set-attribute",):
        return Op(action, htmllib.escape('a "quoted" <value> & more'), "data-kx")
    if action == "remove-attribute":
        return Op(action, attribute=_removable(node))
    if action == "add-class":
        return Op(action, classes=("kx",))
    if action == "remove-class":
        return Op(action, classes=tuple((node.attributes.get("class") or "").split()[:1]))
    if action == "set-text":
        return Op(action, htmllib.escape("<NEW> & text"))
    return Op(action, NEW if action != "remove" else "")


ACTIONS = ["replace-content", "replace", "insert-before", "insert-after", "prepend", "append",
           "set-text", "remove", "set-attribute", "remove-attribute", "add-class",
           "remove-class"]


OUTSIDE = ("replace", "insert-before")


def changed_region(before: str, after: str) -> tuple[int, int]:
    """[start, end) of ``before`` that differs from ``after`` (one contiguous region)."""
    limit = min(len(before), len(after))
    start = _longest(limit, lambda n: before[:n] == after[:n])
    end = _longest(limit - start, lambda n: before[len(before) - n:] == after[len(after) - n:])
    return start, len(before) - end


def _longest(limit: int, same: Callable[[int], bool]) -> int:
    """The largest n <= limit with same(n) (same is monotonic): a binary search."""
    lo, hi = 0, limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if same(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


@pytest.mark.parametrize("name", corpus_names())
def test_each_action_changes_only_its_element(name: str) -> None:
    source = corpus(name)
    selectors = targets(source)
    assert selectors, f"{name} has no element to change"
    for selector in selectors:
        tree = LexborHTMLParser(source)
        node = tree.css_first(selector)
        assert node is not None and len(tree.css(selector)) == 1, selector
        before = [n.mem_id for n in tree.tags(node.tag or "")].index(node.mem_id)
        for action in ACTIONS:
            if ((action == "remove-class" and not node.attributes.get("class"))
                    or (action == "remove-attribute" and not node.attributes)):
                continue
            result = rewrite(source, [SlotRequest("t", selector, (op(action, node),))])
            assert result.results[0].changed == 1, (selector, action, result.results)
            output = result.html
            assert output is not None and output != source
            start, end = changed_region(source, output)
            # lexbor, reading only the untouched bytes before the change, finds the elements
            # before ours, and ours only when the change is inside or after it
            seen = len(LexborHTMLParser(source[:start]).tags(node.tag or ""))
            if action == "remove":
                pass  # removing <p>x</p> before <p>x</p> has no one leftmost difference
            elif action in OUTSIDE or action.endswith(("attribute", "class")):
                assert seen == before, (selector, action, seen, before)
            else:
                assert seen > before, (selector, action, seen, before)
            if action.endswith(("attribute", "class")):
                assert "<" not in source[start:end], (selector, action)  # only the start tag
            assert LexborHTMLParser(output).html == lexbor_does(source, selector, action), (
                selector, action)
            _new_content_is_found(output, selector, action)


def _new_content_is_found(output: str, selector: str, action: str) -> None:
    tree = LexborHTMLParser(output)
    found = tree.css_first(selector)
    if action in ("replace", "remove"):
        assert found is None or not selector.startswith("#")  # a path finds the next one
        assert (tree.css_first("b.kx") is not None) is (action == "replace")
        return
    if action in ("insert-before", "insert-after"):
        assert tree.css_first("b.kx") is not None  # (nth-child paths shift after an insert)
        return
    if action == "remove-attribute":
        return  # perhaps the id itself, when the element has no other attribute
    assert found is not None
    if action == "replace-content":
        assert found.inner_html == NEW
    elif action == "set-text":
        assert found.text() == "<NEW> & text"
    elif action in ("prepend", "append"):
        assert found.css_first("b.kx") is not None
    elif action == "set-attribute":
        assert found.attributes["data-kx"] == 'a "quoted" <value> & more'
    elif action == "add-class":
        assert "kx" in (found.attributes.get("class") or "").split()


@pytest.mark.parametrize("name", corpus_names())
def test_a_page_without_the_slot_goes_out_untouched(name: str) -> None:
    source = corpus(name)
    result = rewrite(source, [SlotRequest("t", "#kairos-no-such-slot", (Op("replace", NEW),)),
                              SlotRequest("t", "main > .kairos-none", (Op("remove"),))])
    assert result.html is None and [r.found for r in result.results] == [0, 0]
    ruleset, _ = load('[[rule]]\nid = "r"\npages = ["*"]\nslot = "#kairos-no-such-slot"\n'
                      'html = "x"\n')
    assert RulesTransform(ruleset).apply(source, page("/any")) is None


@pytest.mark.parametrize(("source", "selector", "op_", "expected"), [
    # an element closed implicitly gets an explicit end tag before what follows it
    ("<div><p id=a>one<p>two</div>", "#a", Op("insert-after", "<i>x</i>"),
     "<div><p id=a>one</p><i>x</i><p>two</div>"),
    ("<ul><li id=a>one<li>two</ul>", "#a", Op("replace-content", "1"),
     "<ul><li id=a>1<li>two</ul>"),
    ("<p id=a class='x  y'>t</p>", "#a", Op("add-class", classes=("z", "x")),
     '<p id=a class="x y z">t</p>'),
    ("<p id=a>t</p>", "#a", Op("add-class", classes=("z",)), '<p id=a class="z">t</p>'),
    ('<br id="a"/>', "#a", Op("set-attribute", "1", "data-x"), '<br id="a" data-x="1"/>'),
    ("<P ID=A Title=x>t</P>", "#A", Op("set-attribute", "y", "title"),
     '<P ID=A title="y">t</P>'),
    ("<p id=a title=x data-b>t</p>", "#a", Op("remove-attribute", attribute="title"),
     "<p id=a data-b>t</p>"),
    # a <p> inside a script or a comment is text, not the slot
    ('<script>x="<p id=a>"</script><!-- <p id=a> --><p id=a>t</p>', "#a", Op("set-text", "u"),
     '<script>x="<p id=a>"</script><!-- <p id=a> --><p id=a>u</p>'),
    ("<textarea id=a>old</textarea>", "#a", Op("set-text", "&lt;new&gt;"),
     "<textarea id=a>&lt;new&gt;</textarea>"),
    ("<p id=a>a<br>b</p>", "#a", Op("remove"), ""),
])
def test_edge_cases(source: str, selector: str, op_: Op, expected: str) -> None:
    assert rewrite(source, [SlotRequest("t", selector, (op_,))]).html == expected


@pytest.mark.parametrize(("source", "selector", "op_", "problem"), [
    ("<img id=a src=x>", "#a", Op("replace-content", "x"), "<img> has no content to change"),
    ("<script id=a>1</script>", "#a", Op("append", "x"), "<script> content is not HTML"),
    ("<body id=a><p>x</body>", "#a", Op("set-text", "x"),
     "the content of <body> cannot be changed"),
])
def test_unsupported_targets_are_left_alone_and_reported(source: str, selector: str, op_: Op,
                                                        problem: str) -> None:
    result = rewrite(source, [SlotRequest("t", selector, (op_,))])
    assert result.html is None
    assert result.results[0].found == 1 and problem in result.results[0].problems[0]
