"""Loading rule files: each validation error, with the message and line an editor sees."""

from __future__ import annotations

import pytest

from proxy.rules.model import Change, Condition, Pages, Placeholder, SegmentRef
from proxy.rules.parse import MAX_FILE_BYTES, FileError, parse_file

from .test_rules_support import load

GOOD = '''
[[rule]]
id = "welcome-back"
pages = ["/", "/products/*"]
priority = 10
audience = { segment = "returning", "device.kind" = "mobile" }
slot = "#greeting"
html = "Welcome back, {geo.city|friend}!"
'''
SEGMENT = '[segment.returning]\n"visitor.returning" = true\n'


def test_a_good_rule_is_parsed_once_into_frozen_parts() -> None:
    ruleset, errors = load(GOOD, "hero.toml", ("segments.toml", SEGMENT))
    assert errors == ()
    (rule,) = ruleset.rules
    assert (rule.id, rule.file, rule.line, rule.order, rule.priority) == (
        "welcome-back", "rules/hero.toml", 3, ("hero.toml", 0), 10)
    assert rule.pages == Pages(("/", "/products/*"))
    assert rule.changes == (Change("#greeting", "replace-content", (
        "Welcome back, ", Placeholder("geo.city", "friend"), "!")),)
    assert rule.specificity == 2  # the segment's condition and device.kind
    assert isinstance(rule.audience.items[0], SegmentRef)  # type: ignore[union-attr]
    assert isinstance(rule.audience.items[0].node, Condition)  # type: ignore[union-attr]


def rule(body: str, header: str = '[[rule]]\nid = "r"\npages = ["/"]\n') -> str:
    return header + body


# (file text, expected message: the whole str(error) or a part of it)
CASES = [
    (rule('slot = "#a"\nhtml = "x"\nprioity = 3\n'),
     'rules/test.toml:6: rule "r": unknown key "prioity"; did you mean "priority"?'),
    ('[[rules]]\nid = "r"\n', 'rules/test.toml:1: unknown top-level key "rules"; did you mean '
     '"rule"?'),
    ('[[rule]]\npages = ["/"]\nslot = "#a"\nhtml = "x"\n',
     'rules/test.toml:1: rule "#1": id: is missing'),
    ('[[rule]]\nid = "no spaces"\npages = ["/"]\n', 'rule "no spaces": id: \'no spaces\' is '
     'not valid: 1-64 letters, digits'),
    (rule('slot = "#a"\nhtml = "x"\n') + rule('slot = "#b"\nhtml = "y"\n'),
     'rules/test.toml:7: rule "r": id: is used by an earlier rule in this file'),
    ('[[rule]]\nid = "r"\nslot = "#a"\nhtml = "x"\n', 'rule "r": pages: is missing: say where'),
    (rule('slot = "#a"\nhtml = "x"\n', '[[rule]]\nid = "r"\npages = ["products/*"]\n'),
     'pages: "products/*" is not a path'),
    (rule('slot = "#a"\nhtml = "x"\n', '[[rule]]\nid = "r"\npages_regex = ["^/(a"]\n'),
     "pages_regex: regex '^/(a' does not compile: missing ), unterminated subpattern"),
    (rule('slot = "#a"\nhtml = "x"\n', '[[rule]]\nid = "r"\npages_regex = ["^/(a+)+$"]\n'),
     "pages_regex: regex '^/(a+)+$' repeats a group that itself repeats"),
    (rule("audience = { \"utm.term\" = { regex = '(\\w+\\s?)*$' } }\n"
          'slot = "#a"\nhtml = "x"\n'),
     "repeats a group that itself repeats; such patterns can take exponential time"),
    (rule('hosts = ["https://shop.example.com"]\nslot = "#a"\nhtml = "x"\n'),
     'hosts: "https://shop.example.com" is not a host name'),
    (rule('html = "x"\n'), 'slot: must be a CSS selector such as "#greeting"'),
    (rule('priority = 3\n'), 'rules/test.toml:2: rule "r": slot: is missing: name the element'),
    (rule('slot = "div >"\nhtml = "x"\n'),
     'rules/test.toml:4: rule "r": slot: "div >" is not valid CSS selector syntax'),
    (rule('slot = "a[href"\nhtml = "x"\n'), 'slot: "a[href" has an unclosed bracket'),
    (rule('slot = "#a"\naction = "replace-inner"\nhtml = "x"\n'),
     'rules/test.toml:5: rule "r": action: unknown action "replace-inner"; did you mean '
     '"replace-content"?; valid: replace-content, replace, insert-before'),
    (rule('slot = "#a"\naction = "insert-before"\n'),
     'html: is missing: action "insert-before" needs html'),
    (rule('slot = "#a"\naction = "replace"\nhtml = "x"\ntext = "y"\n'),
     'text: does not apply to action "replace" (it takes html)'),
    (rule('slot = "#a"\naction = "remove"\nhtml = "x"\n'),
     'html: does not apply to action "remove" (it takes nothing)'),
    (rule('slot = "#a"\nhtml = "<div>hello"\n'),
     'html: the HTML is not self-contained: <div> is never closed'),
    (rule('slot = "#a"\nhtml = "hello</p>"\n'),
     'html: the HTML is not self-contained: </p> has no matching start tag'),
    (rule('slot = "#a"\nhtml = "<b><i>x</b></i>"\n'),
     '</b> has no matching start tag while <i> is open'),
    (rule('slot = "#a"\nhtml = "x <!-- y"\n'), 'comment is never closed'),
    (rule('slot = "#a"\nhtml = "<body>x</body>"\n'), '<body> cannot be part of a slot'),
    (rule('slot = "#a"\nhtml = "<a href=\'/x\'"\n'), '<a> is never closed (missing >)'),
    (rule('slot = "#a"\nhtml = "<script>var a = 1;"\n'), '<script> is never closed'),
    (rule('slot = "#a"\naction = "set-attribute"\nattribute = "on click"\nvalue = "x"\n'),
     "attribute: 'on click' is not an attribute name"),
    (rule('slot = "#a"\naction = "add-class"\nclass = "a\\"b"\n'),
     'class: must be class names'),
    (rule('priority = 5000\nslot = "#a"\nhtml = "x"\n'),
     "priority: 5000 is not a whole number from -1000 to 1000"),
    (rule('enabled = "no"\nslot = "#a"\nhtml = "x"\n'), 'enabled: must be true or false'),
    (rule('slot = "#a"\nhtml = "x"\n[[rule.change]]\nslot = "#b"\nhtml = "y"\n'),
     'change: write the change either in the rule (slot = ...) or in [[rule.change]]'),
    (rule('[[rule.change]]\nslot = "#b"\nhtml = "y"\nslto = 1\n'),
     'change[0]: unknown key "slto"; did you mean "slot"?'),
    (rule('[[rule.change]]\nslot = "#b"\naction = "replace"\nhtml = "y"\n'
          '[[rule.change]]\nslot = "#b"\naction = "add-class"\nclass = "z"\n'),
     'change: slot "#b" gets replace, add-class: these cannot be combined'),
    (rule('[[rule.change]]\nslot = "#b"\nhtml = "y"\n[[rule.change]]\nslot = "#b"\ntext = "z"\n'),
     'slot "#b" gets replace-content, set-text'),
    # audiences
    (rule('audience = { "visitor.retuning" = true }\nslot = "#a"\nhtml = "x"\n'),
     'rules/test.toml:4: rule "r": audience: unknown attribute "visitor.retuning"; did you '
     'mean "visitor.returning"?'),
    (rule('slot = "#a"\nhtml = "x"\n[rule.audience]\nvisitor.retuning = true\n'),
     'rules/test.toml:7: rule "r": audience: unknown attribute "visitor.retuning"'),
    (rule('slot = "#a"\nhtml = "x"\n[rule.audience]\ntime.hour = { gtee = 5 }\n'),
     'audience: time.hour: unknown operator "gtee"; did you mean "gte"?; valid: equals, in, '
     'not, gt, gte, lt, lte, prefix, regex, exists'),
    (rule('audience = { "time.hour" = { prefix = "1" } }\nslot = "#a"\nhtml = "x"\n'),
     '"prefix" does not apply to a number; use equals, in, not, gt, gte, lt, lte, exists'),
    (rule('audience = { "visitor.returning" = "yes" }\nslot = "#a"\nhtml = "x"\n'),
     "visitor.returning is true or false, not 'yes'"),
    (rule('audience = { "geo.country" = 49 }\nslot = "#a"\nhtml = "x"\n'),
     "geo.country is text: write '49' in quotes"),
    (rule('audience = { "device.kind" = "moblie" }\nslot = "#a"\nhtml = "x"\n'),
     '"moblie" is not a value of device.kind; did you mean "mobile"?; valid: "mobile", '
     '"tablet", "desktop", "bot"'),
    (rule('audience = { "utm.term" = { regex = "(boots" } }\nslot = "#a"\nhtml = "x"\n'),
     "regex '(boots' does not compile"),
    (rule('audience = {}\nslot = "#a"\nhtml = "x"\n'), "audience: must be a table of "
     "conditions"),
    (rule('audience = { any = [] }\nslot = "#a"\nhtml = "x"\n'),
     "audience.any: must be a list of condition tables"),
    (rule('audience = { "signals.Weather" = "rain" }\nslot = "#a"\nhtml = "x"\n'),
     '"signals.Weather" is not a valid signal name'),
    (rule('[rule.audience]\n"device.kind" = "mobile"\nslot = "#a"\nhtml = "x"\n'),
     'rules/test.toml:6: rule "r": audience: "slot" belongs to the rule, not to its audience'),
    (rule('audience = { "geo.country" = { in = [] } }\nslot = "#a"\nhtml = "x"\n'),
     "in needs at least one value"),
    # schedules
    (rule('schedule = { start = 2025-12-26, end = 2025-12-01 }\nslot = "#a"\nhtml = "x"\n'),
     "schedule.end: 2025-12-02 00:00:00 is not after start 2025-12-26 00:00:00"),
    (rule('schedule = { hours = [24] }\nslot = "#a"\nhtml = "x"\n'),
     "schedule.hours: 24 is not one of hours 0-23"),
    (rule('schedule = { hours = ["6-25"] }\nslot = "#a"\nhtml = "x"\n'),
     "schedule.hours: '6-25' is not one of hours 0-23"),
    (rule('schedule = { weekdays = ["funday"] }\nslot = "#a"\nhtml = "x"\n'),
     'schedule.weekdays: "funday" is not a weekday; did you mean "sunday"?'),
    (rule('schedule = { hour = [6] }\nslot = "#a"\nhtml = "x"\n'),
     'schedule: unknown key "hour"; did you mean "hours"?'),
    (rule('schedule = { start = "soon" }\nslot = "#a"\nhtml = "x"\n'),
     "schedule.start: expected a date (2025-12-01) or a date-time"),
    (rule('schedule = { start = 08:00:00 }\nslot = "#a"\nhtml = "x"\n'),
     "schedule.start: expected a date"),
    # placeholders
    (rule('slot = "#a"\nhtml = "Hi {geo.cty}"\n'),
     'html: placeholder {geo.cty}: unknown attribute "geo.cty"; did you mean "geo.city"?'),
    (rule('slot = "#a"\nhtml = "Hi { geo.city }"\n'),
     "html: '{ geo.city }' looks like a placeholder but is not one"),
    (rule('slot = "#a"\nhtml = "<script>var c = \'{utm.campaign}\';</script>"\n'),
     "html: placeholder {utm.campaign} is inside <script>; placeholders may only stand in "
     "text or in quoted attribute values"),
    (rule('slot = "#a"\nhtml = "<style>a::after{content:\'{geo.city}\'}</style>"\n'),
     "placeholder {geo.city} is inside <style>"),
    (rule('slot = "#a"\nhtml = "<a href=\'/search?q={source.term}\'>x</a>"\n'),
     'placeholder {source.term} is in the "href" attribute'),
    (rule('slot = "#a"\nhtml = "<img src=\'/{geo.city}.png\' alt=\'\'>"\n'),
     'is in the "src" attribute'),
    (rule('slot = "#a"\nhtml = "<p style=\'color:{utm.content}\'>x</p>"\n'),
     'is in the "style" attribute'),
    (rule('slot = "#a"\nhtml = "<p onclick=\'go(\\"{utm.id}\\")\'>x</p>"\n'),
     'is in the event handler "onclick"'),
    (rule('slot = "#a"\nhtml = "<p title={geo.city}>x</p>"\n'),
     'is in the unquoted value of "title" (put the value in quotes)'),
    (rule('slot = "#a"\nhtml = "<p data-{geo.city}=\'1\'>x</p>"\n'),
     "is in a tag name or attribute name"),
    (rule('slot = "#a"\nhtml = "x <!-- {geo.city} -->"\n'), "is inside a comment"),
    (rule('slot = "#a"\naction = "set-attribute"\nattribute = "href"\nvalue = "/{geo.city}"\n'),
     'value: placeholders are not allowed in the "href" attribute'),
    (rule('slot = "#a"\naction = "set-attribute"\nattribute = "onmouseover"\n'
          'value = "{geo.city}"\n'), 'not allowed in the event handler "onmouseover"'),
    (rule('slot = "#a"\nhtml = 5\n'), "html: must be text"),
]


@pytest.mark.parametrize(("text", "message"), CASES, ids=[c[1][:50] for c in CASES])
def test_each_validation_error_is_reported(text: str, message: str) -> None:
    ruleset, errors = load(text)
    assert any(message in str(e) for e in errors), [str(e) for e in errors]
    assert len(ruleset.rules) < max(1, text.count("[[rule]]"))  # the bad rule is off


@pytest.mark.parametrize(("data", "message"), [
    (b'[[rule]]\nid = "r"\npages = ["/"\n', 'rules/x.toml:3: is not valid TOML'),
    (b'[[rule]]\nid = "r\n', "rules/x.toml:2: is not valid TOML"),
    (b'[[rule]]\nid = "caf\xe9"\n', "rules/x.toml:2: is not UTF-8 text"),
    (b"#" * (MAX_FILE_BYTES + 1), f"rules/x.toml: is {MAX_FILE_BYTES + 1} bytes; rule files "
     f"may be at most {MAX_FILE_BYTES} bytes"),
])
def test_a_file_that_cannot_be_read_fails_as_a_whole(data: bytes, message: str) -> None:
    with pytest.raises(FileError) as caught:
        parse_file(data, "x.toml", "rules/x.toml")
    assert message in str(caught.value)


def test_a_bad_rule_disables_only_itself() -> None:
    text = (rule('slot = "#a"\nhtml = "ok"\n', '[[rule]]\nid = "first"\npages = ["/"]\n')
            + rule('slot = "#a"\nhtml = "<div>"\n', '[[rule]]\nid = "broken"\npages = ["/"]\n')
            + rule('slot = "#b"\nhtml = "ok"\n', '[[rule]]\nid = "third"\npages = ["/"]\n'))
    ruleset, errors = load(text)
    assert [r.id for r in ruleset.rules] == ["first", "third"]
    assert [str(e) for e in errors] == [
        'rules/test.toml:10: rule "broken": html: the HTML is not self-contained: <div> is '
        "never closed"]


@pytest.mark.parametrize(("files", "message"), [
    ([("a.toml", rule('slot = "#a"\nhtml = "x"\n')), ("b.toml", rule('slot = "#b"\nhtml = "y"\n'))],
     'rules/b.toml:2: rule "r": id: id is already used by rules/a.toml:2; ids must be unique'),
    ([("a.toml", rule('audience = { segment = "retuning" }\nslot = "#a"\nhtml = "x"\n')),
      ("segments.toml", SEGMENT)],
     'rules/a.toml:2: rule "r": audience: unknown segment "retuning"; did you mean '
     '"returning"?; defined: "returning"'),
    ([("s.toml", '[segment.a]\nsegment = "b"\n[segment.b]\nsegment = "a"\n')],
     'rules/s.toml:1: segment "a": segments refer to each other in a cycle: a -> b -> a'),
    ([("s.toml", SEGMENT), ("t.toml", SEGMENT)],
     'rules/t.toml:1: segment "returning": is already defined at rules/s.toml:1'),
    ([("s.toml", '[segment.Bad]\n"visitor.new" = true\n')], 'segment "Bad": name is not valid'),
    ([("s.toml", '[segment.x]\n"visitor.nwe" = true\n')],
     'rules/s.toml:2: segment "x": conditions: unknown attribute "visitor.nwe"; did you mean '
     '"visitor.new"?'),
    ([("s.toml", '[segment.x]\n"visitor.nwe" = true\n'),
      ("a.toml", rule('audience = { segment = "x" }\nslot = "#a"\nhtml = "x"\n'))],
     'rules/a.toml:2: rule "r": audience: segment "x" has errors (reported at rules/s.toml:2),'
     " so this rule is off until they are fixed"),
    ([("s.toml", '[segment.x]\nsegment = "y"\n[segment.y]\n"visitor.nwe" = true\n'),
      ("a.toml", rule('audience = { segment = "x" }\nslot = "#a"\nhtml = "x"\n'))],
     'rules/a.toml:2: rule "r": audience: segment "x" has errors (reported at '
     'rules/s.toml:1), so this rule is off until they are fixed'),
])
def test_errors_across_files(files: list[tuple[str, str]], message: str) -> None:
    _, errors = load(files[0][1], files[0][0], *files[1:])
    assert any(message in str(e) for e in errors), [str(e) for e in errors]


def test_disabled_rules_are_known_but_off() -> None:
    ruleset, errors = load(rule('enabled = false\nslot = "#a"\nhtml = "x"\n'))
    assert (ruleset.rules, ruleset.disabled, errors) == ((), ("r",), ())


def test_unquoted_dotted_keys_read_like_quoted_ones() -> None:
    quoted, _ = load(rule('audience = { "visitor.returning" = true, "time.hour" = { gte = 6 } }'
                          '\nslot = "#a"\nhtml = "x"\n'))
    bare, _ = load(rule('slot = "#a"\nhtml = "x"\n[rule.audience]\nvisitor.returning = true\n'
                        'time.hour = { gte = 6 }\n'))
    assert quoted.rules[0].audience == bare.rules[0].audience
    assert bare.rules[0].specificity == 2
