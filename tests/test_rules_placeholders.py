"""Placeholders: request values are always inserted escaped (S4), defaults fill the gaps."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from selectolax.lexbor import LexborHTMLParser

from proxy.rules.engine import render
from proxy.rules.placeholders import parse_attribute, parse_html, parse_text
from proxy.rules.placeholders import render as render_template

from .test_rules_support import demo_html, load, page, visitor

HOSTILE = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "'><svg onload=alert(1)>",
    "</h1><script>alert(document.cookie)</script><h1>",
    "&lt;script&gt; &amp; {geo.city} ${7*7}",
    "<!--",
    "]]></p><p id=greeting>spoof",
]

RULES = '''
[[rule]]
id = "echo"
pages = ["/"]

[[rule.change]]
slot = "#hero-headline"
html = """Looking for {utm.term|gear}? \\
<span class="term" title="{utm.campaign}">{utm.campaign}</span>"""

[[rule.change]]
slot = "#hero-teaser"
text = "You searched: {utm.term}"

[[rule.change]]
slot = "#cta"
action = "set-attribute"
attribute = "title"
value = "Offer for {utm.content|everyone}"
'''


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_request_values_stay_text(value: str) -> None:
    ruleset, errors = load(RULES)
    assert errors == ()
    query = urlencode({"utm_term": value, "utm_campaign": value, "utm_content": value})
    ctx = visitor(query=query)
    assert ctx.get("utm.term") == value  # the value really reaches the context
    edit = render(ruleset, demo_html("/"), page("/", ctx)).edit
    assert edit is not None
    tree = LexborHTMLParser(edit.html)
    assert len(tree.css("script")) == 0 and len(tree.css("img")) == 0
    assert len(tree.css("svg")) == len(LexborHTMLParser(demo_html("/")).css("svg"))
    assert len(tree.css("#greeting")) == 1 and len(tree.css("#hero-headline span")) == 1
    headline = tree.css_first("#hero-headline")
    assert headline.text() == f"Looking for {value}? {value}"
    assert headline.css_first("span").attributes == {"class": "term", "title": value}
    assert tree.css_first("#hero-teaser").text() == f"You searched: {value}"
    assert tree.css_first("#cta").attributes["title"] == f"Offer for {value}"


@pytest.mark.parametrize(("query", "headline", "title"), [
    ("", "Looking for gear? ", "Offer for everyone"),  # missing: defaults (or nothing)
    ("utm_term=tents&utm_content=vip", "Looking for tents? ", "Offer for vip"),
])
def test_missing_values_fall_back_to_the_default(query: str, headline: str, title: str
                                                 ) -> None:
    ruleset, _ = load(RULES)
    ctx = visitor(query=query)
    tree = LexborHTMLParser(render(ruleset, demo_html("/"), page("/", ctx)).edit.html)  # type: ignore[union-attr]
    assert tree.css_first("#hero-headline").text() == headline
    assert tree.css_first("#cta").attributes["title"] == title


def test_without_a_context_placeholders_show_their_defaults() -> None:
    ruleset, _ = load(RULES)
    tree = LexborHTMLParser(render(ruleset, demo_html("/"), page("/")).edit.html)  # type: ignore[union-attr]
    assert tree.css_first("#hero-teaser").text() == "You searched: "


@pytest.mark.parametrize(("template", "values", "expected"), [
    ("{geo.city|your city}", {}, "your city"),
    ("{geo.city|your city}", {"geo.city": ""}, "your city"),
    ("{geo.city|<b>x</b>}", {}, "&lt;b&gt;x&lt;/b&gt;"),  # the default is text too
    ("{geo.city}!", {}, "!"),
    ("visit {visitor.visit_number}", {"visitor.visit_number": 3}, "visit 3"),
    ("{visitor.returning}", {"visitor.returning": True}, "yes"),
    ("{language.all}", {"language.all": ("de-DE", "en")}, "de-DE, en"),
    ("{signals.temp}", {"signals.temp": 21.0}, "21"),
    ("a{color:red} {x} {geo.city}", {"geo.city": "Köln"}, "a{color:red} {x} Köln"),
    ("&#123;geo.city}", {"geo.city": "Köln"}, "&#123;geo.city}"),
])
def test_rendering(template: str, values: dict[str, object], expected: str) -> None:
    assert render_template(parse_html(template, "html"), values.get) == expected


def test_text_and_attribute_literals_are_escaped_at_load() -> None:
    assert render_template(parse_text("<b>{geo.city}</b> & co", "text"),
                           {"geo.city": "<i>"}.get) == "&lt;b&gt;&lt;i&gt;&lt;/b&gt; &amp; co"
    assert render_template(parse_attribute('say "hi" {geo.city}', "title", "value"),
                           {"geo.city": "'"}.get) == "say &quot;hi&quot; &#x27;"


@pytest.mark.parametrize("html", [
    '<p title="{geo.city}">x</p>',
    "<p title='{geo.city}' class=\"c {geo.country}\">x</p>",
    "<textarea>{geo.city}</textarea>",
    "<title>{geo.city}</title>",
    "<svg><text>{geo.city}</text></svg>",
    "<script>if (a) {b.c()}</script> {geo.city}",  # braces in code are code
])
def test_placeholders_allowed_in_text_and_quoted_values(html: str) -> None:
    parse_html(html, "html")  # does not raise


@pytest.mark.parametrize("html", [
    "<script>var city = '{geo.city}';</script>",
    "<script type=module>{geo.city}</script>",
    "<style>.x::before { content: '{geo.city}' }</style>",
    "<svg><style>{geo.city}</style></svg>",
    "<noembed>{geo.city}</noembed>",
    '<a href="{source.referrer_host}">x</a>',
    '<a href="/p?c={utm.campaign}">x</a>',
    '<img srcset="{geo.city}.png 2x" alt="">',
    '<form action="/{geo.city}"></form>',
    '<button formaction="/{geo.city}">x</button>',
    '<iframe srcdoc="{geo.city}"></iframe>',
    '<p style="background:url({geo.city})">x</p>',
    '<p onclick="alert(\'{geo.city}\')">x</p>',
    '<meta content="0;url={geo.city}">',
    '<link rel="x" title="{geo.city}">',
    "<p title={geo.city}>x</p>",
    "<p {geo.city}>x</p>",
    "<{geo.city}>x",
    "<!-- {geo.city} -->",
])
def test_placeholders_refused_where_escaping_is_not_enough(html: str) -> None:
    with pytest.raises(ValueError, match="placeholder"):
        parse_html(html, "html")
