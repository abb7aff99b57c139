"""``[[experiment]]`` tables in the rules folder: what loads, what is refused and how the
message says so (file:line, experiment, field, what would be valid), how the folder's
experiments are found for a page, how arms outrank rules, and what ``kairos rules check``
lists about them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from experiments.assignment import plan_layers
from experiments.model import Allocation
from proxy.rules.check import check_folder
from proxy.rules.experiments import ARM_PRIORITY
from proxy.rules.loader import RuleLibrary
from proxy.rules.model import RuleError
from proxy.rules.parse import FileRules, parse_file
from proxy.rules.plan import APPLIED, LOST, plan

from .test_rules_support import RULES, page

GOAL = 'goals = [{ id = "signup", kind = "page", url = "/thanks", primary = true }]'

AB = """\
[[experiment]]
id = "hero"
description = "Headline test on the home page"
pages = ["/"]
salt = "hero.v1"
goals = [
  { id = "signup", kind = "page", url = "/thanks", primary = true },
  { id = "cta", kind = "click", selector = "#cta" },
]

[[experiment.arms]]
id = "control"
weight = 0.5

[[experiment.arms]]
id = "bold"
weight = 0.5
slot = "#hero-headline"
html = "<b>Bold</b>"
"""


def parse(text: str, name: str = "exp.toml") -> FileRules:
    return parse_file(text.encode(), name, f"rules/{name}")


def messages(errors: tuple[RuleError, ...] | list[RuleError]) -> list[str]:
    return [str(e) for e in errors]


def experiment(eid: str = "split", *, pages: str = '["/"]', arm: str = "", extra: str = "",
               weights: tuple[float, float] = (0.5, 0.5)) -> str:
    """An experiment whose second arm ("b") has the lines ``arm``."""
    return (f'[[experiment]]\nid = "{eid}"\npages = {pages}\n{extra}\n{GOAL}\n\n'
            f'[[experiment.arms]]\nid = "a"\nweight = {weights[0]}\n\n'
            f'[[experiment.arms]]\nid = "b"\nweight = {weights[1]}\n{arm}\n')


def line_of(text: str, needle: str, after: int = 0) -> int:
    """The 1-based line of the first ``needle`` after line ``after``."""
    lines = text.splitlines()
    return next(i + 1 for i in range(after, len(lines)) if needle in lines[i])


def one_error(text: str) -> str:
    parsed = parse(text)
    assert len(parsed.errors) == 1, messages(parsed.errors)
    return str(parsed.errors[0])


def write(folder: Path, name: str, text: str) -> None:
    (folder / name).write_text(text, encoding="utf-8")


# -- what loads ------------------------------------------------------------------------


def test_an_ab_test_with_a_slot_arm_and_a_control_without_changes() -> None:
    parsed = parse(AB)
    assert parsed.errors == ()
    (hero,) = parsed.experiments
    assert (hero.id, hero.where, hero.description) == (
        "hero", "rules/exp.toml:2", "Headline test on the home page")
    e = hero.experiment
    assert (e.salt, e.layer, e.traffic, e.allocation, e.start, e.end) == (
        "hero.v1", None, 1.0, Allocation.FIXED, None, None)
    assert [(a.id, a.weight) for a in e.arms] == [("control", 0.5), ("bold", 0.5)]
    assert e.primary_goal.id == "signup" and [g.id for g in e.goals] == ["signup", "cta"]
    assert hero.pages.globs == ("/",)
    control, bold = hero.arms
    assert (control.changes, control.redirect) == ((), None)
    assert [(c.selector, c.action, c.content) for c in bold.changes] == [
        ("#hero-headline", "replace-content", ("<b>Bold</b>",))]
    assert hero.arm_rule("control") is None
    rule = hero.arm_rule("bold")
    assert rule is not None and (rule.id, rule.priority, rule.slots, rule.where) == (
        "hero:bold", ARM_PRIORITY, ("#hero-headline",), "rules/exp.toml:2")


def test_arms_with_several_changes_in_change_tables() -> None:
    text = experiment(arm='[[experiment.arms.change]]\nslot = "#hero-headline"\n'
                      'text = "Plain & simple"\n\n[[experiment.arms.change]]\nslot = "#cta"\n'
                      'action = "add-class"\nclass = "big"\n')
    parsed = parse(text)
    assert parsed.errors == ()
    changes = parsed.experiments[0].content("b").changes
    assert [(c.selector, c.action) for c in changes] == [("#hero-headline", "set-text"),
                                                          ("#cta", "add-class")]
    assert changes[0].content == ("Plain &amp; simple",)   # text is escaped at load
    assert parsed.experiments[0].arm_rule("b").slots == ("#hero-headline", "#cta")


@pytest.mark.parametrize("target", ["/landing-b", "/landing-b?variant=b",
                                    "https://shop.example.com/landing-b",
                                    "http://landing.example.org/"])
def test_a_redirect_arm_takes_a_path_or_an_http_url(target: str) -> None:
    parsed = parse(experiment(arm=f'redirect = "{target}"'))
    assert parsed.errors == ()
    assert parsed.experiments[0].content("b").redirect == target
    assert parsed.experiments[0].content("a").redirect is None
    assert parsed.experiments[0].arm_rule("b") is None   # a redirect changes no slot


# -- what is refused, and how it is said -----------------------------------------------


@pytest.mark.parametrize(("target", "says"), [
    ("//evil.com", 'must start with a single "/" (a path on this site) or be an http(s):// '
                   "URL"),
    ("javascript:alert(1)", 'must be a path ("/landing-b") or an http(s):// URL'),
    ("landing", 'must start with a single "/" (a path on this site) or be an http(s):// URL'),
    ("/landing-b#offer", "has a #fragment; give the target without it"),
    ("https://shop.example.com/b#offer", "has a #fragment; give the target without it"),
    ("/\\\\evil.com", "is not a URL: give a path on this site such as \"/landing-b\" or an "
                      "absolute https:// URL (no spaces, no backslashes)"),
    ("/ landing", "is not a URL"),
])
def test_unsafe_or_broken_redirect_targets_are_refused(target: str, says: str) -> None:
    text = experiment(arm=f'redirect = "{target}"')
    message = one_error(text)
    where = f"rules/exp.toml:{line_of(text, 'redirect')}"
    assert message.startswith(f'{where}: experiment "split": arms.b.redirect: ')
    assert says in message
    assert parse(text).experiments == ()   # the experiment is off, not half-loaded


@pytest.mark.parametrize(("pages", "target"), [
    ('["/", "/landing/*"]', "/landing/b"),
    ('["/"]', "/?arm=b"),
    ('["/home"]', "/home"),
])
def test_a_redirect_to_the_experiments_own_pages_is_a_loop(pages: str, target: str) -> None:
    text = experiment(pages=pages, arm=f'redirect = "{target}"')
    message = one_error(text)
    assert message == (f'rules/exp.toml:{line_of(text, "redirect")}: experiment "split": '
                       f'arms.b.redirect: "{target}" is itself one of the experiment\'s '
                       "pages: a visitor in this arm would be redirected forever; redirect "
                       "to a page outside pages, or narrow pages")


def test_a_redirect_loop_is_found_through_pages_regex_and_the_experiments_hosts() -> None:
    regex = experiment(pages='["/x"]\npages_regex = ["^/landing"]', arm='redirect = "/landing"')
    assert "is itself one of the experiment's pages" in one_error(regex)
    hosts = experiment(extra='hosts = ["shop.example.com"]',
                       arm='redirect = "https://shop.example.com/"')
    assert "is itself one of the experiment's pages" in one_error(hosts)
    elsewhere = experiment(extra='hosts = ["shop.example.com"]',
                           arm='redirect = "https://other.example.com/"')
    assert parse(elsewhere).errors == ()


def test_an_arm_either_redirects_or_changes_slots() -> None:
    text = experiment(arm='redirect = "/b"\nslot = "#h"\nhtml = "x"')
    assert one_error(text) == (f"rules/exp.toml:{line_of(text, 'redirect')}: experiment "
                               '"split": arms.b: an arm either redirects or changes slots, '
                               "not both: remove redirect or the slot changes")


def test_an_unknown_top_level_key_suggests_the_right_one() -> None:
    text = experiment(extra='pagess = ["/x"]')
    assert one_error(text) == (
        f'rules/exp.toml:{line_of(text, "pagess")}: experiment "split": unknown key "pagess"; '
        'did you mean "pages"?; valid: id, salt, layer, traffic, arms, allocation, start, '
        "end, goals, bandit, pages, pages_regex, hosts, audience, description, enabled")


def test_an_unknown_arm_key_suggests_the_right_one_at_the_arms_line() -> None:
    text = experiment(arm='sloot = "#h"\nhtml = "x"')
    message = one_error(text)
    assert message.startswith(f"rules/exp.toml:{line_of(text, 'sloot')}: experiment "
                              '"split": arms.b: unknown key "sloot"; did you mean "slot"?; '
                              "valid: id, weight, slot, ")
    assert "redirect" in message   # the valid keys include the arm-only ones


def test_a_bad_change_in_a_later_arm_is_reported_at_that_arm() -> None:
    text = (experiment(arm='slot = "#h"\naction = "set-text"\ntext = "B"')
            + '\n[[experiment.arms]]\nid = "c"\nweight = 0\nslot = "#h"\naction = "bogus"\n')
    message = one_error(text)
    at = line_of(text, 'action = "bogus"')
    assert message.startswith(f'rules/exp.toml:{at}: experiment "split": arms.c.action: '
                              'unknown action "bogus"; valid: replace-content, ')


def test_lines_of_an_experiment_after_rules_and_segments_are_its_own() -> None:
    rule = '[[rule]]\nid = "r"\npages = ["/"]\nslot = "#h"\naction = "remove"\n\n'
    segment = '[segment.mobile]\n"device.kind" = "mobile"\n\n'
    text = rule + segment + experiment(arm='slot = "#h"\naction = "bogus"')
    at = line_of(text, 'action = "bogus"')
    assert at > 5 and one_error(text).startswith(f"rules/exp.toml:{at}: ")
    # and a segment after a rule and an experiment finds its own keys, not theirs
    text = (rule.replace('action = "remove"', 'action = "remove"\naudience = { '
                         '"device.kind" = "mobile" }') + experiment() + '\n[segment.m]\n'
            '"device.kind" = "moblie"\n')
    at = line_of(text, '"moblie"')
    assert at > 20 and one_error(text).startswith(f'rules/exp.toml:{at}: segment "m": ')


def test_weights_that_do_not_sum_to_one_are_reported_once_with_file_and_line() -> None:
    text = experiment(weights=(0.5, 0.6))
    message = one_error(text)
    assert message == ('rules/exp.toml:2: experiment "split": arm weights sum to 1.1 '
                       "(a=0.5, b=0.6), expected 1 within 1e-09; weights are never rescaled")
    assert not re.search(r"exp\.toml(:\d+)?: .*exp\.toml", message)   # no doubled prefix


def test_no_primary_goal() -> None:
    text = experiment().replace(", primary = true", "")
    assert one_error(text) == ('rules/exp.toml:2: experiment "split": exactly one goal must '
                               "have primary = true, found 0 (none)")


def test_a_goal_with_the_wrong_target_key_says_which_it_takes() -> None:
    text = experiment().replace('url = "/thanks"', 'selector = "#buy"')
    assert one_error(text) == ("rules/exp.toml:2: experiment \"split\": goals[0] ('signup'): "
                               "a page goal takes url, not selector")


@pytest.mark.parametrize(("goal", "says"), [
    ('kind = "page", url = "thanks"', 'url "thanks" is not a path: paths start with "/" (a '
                                      'glob as in pages: "/thanks", "/checkout/*")'),
    ('kind = "click", selector = "a[href"', 'selector "a[href" has an unclosed bracket, '
                                            'parenthesis or quote; give a CSS selector'),
    ('kind = "custom", event = "add to cart"', 'event "add to cart" is not an event name that '
                                               "kairos.track() or Kairos-Event can report: "
                                               "1-64 characters A-Z a-z 0-9 _ . : - starting"),
    ('kind = "revenue", event = "' + "x" * 65 + '"', "is not an event name"),
])
def test_goals_that_could_never_convert_are_refused(goal: str, says: str) -> None:
    text = experiment().replace('kind = "page", url = "/thanks"', goal)
    message = one_error(text)
    assert message.startswith(f"rules/exp.toml:{line_of(text, 'goals')}: experiment "
                              "\"split\": goals[0] ('signup'): ")
    assert says in message


def test_a_bad_experiment_is_off_and_the_rest_of_the_file_loads() -> None:
    text = (experiment("good") + "\n" + experiment("bad", pages='["/bad"]', weights=(1, 1))
            + '\n[[rule]]\nid = "r"\npages = ["/"]\nslot = "#h"\nhtml = "x"\n')
    parsed = parse(text)
    assert [e.id for e in parsed.experiments] == ["good"]
    assert [r.id for r in parsed.rules] == ["r"]
    bad = line_of(text, 'id = "bad"')
    assert messages(parsed.errors) == [
        f'rules/exp.toml:{bad}: experiment "bad": arm weights sum to 2 (a=1, b=1), expected 1 '
        "within 1e-09; weights are never rescaled"]


def test_duplicate_ids_in_one_file() -> None:
    text = experiment("hero") + "\n" + experiment("hero", pages='["/other"]')
    parsed = parse(text)
    assert [e.pages.globs for e in parsed.experiments] == [("/",)]   # the first one stays
    second = [i + 1 for i, line in enumerate(text.splitlines()) if line == 'id = "hero"'][1]
    assert messages(parsed.errors) == [
        f'rules/exp.toml:{second}: experiment "hero": id: is used by an earlier experiment '
        "in this file; ids must be unique"]


def test_duplicate_ids_across_files(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", experiment("hero"))
    write(tmp_path, "b.toml", experiment("hero", pages='["/b"]'))
    library = RuleLibrary.load(tmp_path, quiet=True)
    assert [e.file for e in library.ruleset.experiments] == [str(tmp_path / "a.toml")]
    assert messages(library.errors) == [
        f'{tmp_path / "b.toml"}:2: experiment "hero": id is already used by '
        f'{tmp_path / "a.toml"}:2; ids must be unique in the folder']


# -- audiences, enabled, last good version ---------------------------------------------


def test_an_audience_may_use_a_segment_of_another_file(tmp_path: Path) -> None:
    write(tmp_path, "exp.toml", experiment(extra='audience = { segment = "mobile" }'))
    write(tmp_path, "segments.toml", '[segment.mobile]\n"device.kind" = "mobile"\n')
    library = RuleLibrary.load(tmp_path, quiet=True)
    assert library.errors == ()
    (split,) = library.ruleset.experiments
    assert split.audience is not None and split.audience.node is not None  # resolved


def test_an_unknown_segment_turns_that_experiment_off_and_the_others_load(
        tmp_path: Path) -> None:
    write(tmp_path, "exp.toml", experiment("typo", extra='audience = { segment = "mobil" }')
          + "\n" + experiment("fine", pages='["/fine"]', extra='audience = { segment = '
                                                                  '"mobile" }'))
    write(tmp_path, "segments.toml", '[segment.mobile]\n"device.kind" = "mobile"\n')
    library = RuleLibrary.load(tmp_path, quiet=True)
    assert [e.id for e in library.ruleset.experiments] == ["fine"]
    assert messages(library.errors) == [
        f'{tmp_path / "exp.toml"}:2: experiment "typo": audience: unknown segment "mobil"; '
        'did you mean "mobile"?; defined: "mobile"']


def test_an_audience_on_a_broken_segment_points_at_the_segments_error(tmp_path: Path) -> None:
    write(tmp_path, "exp.toml", experiment(extra='audience = { segment = "mobile" }'))
    write(tmp_path, "segments.toml", '[segment.mobile]\n"device.kind" = "moblie"\n')
    library = RuleLibrary.load(tmp_path, quiet=True)
    assert library.ruleset.experiments == ()
    segment_error, experiment_error = messages(library.errors)
    assert segment_error.startswith(f'{tmp_path / "segments.toml"}:2: segment "mobile": ')
    assert experiment_error == (
        f'{tmp_path / "exp.toml"}:2: experiment "split": audience: segment "mobile" has '
        f'errors (reported at {tmp_path / "segments.toml"}:2), so this experiment is off '
        "until they are fixed")


def test_enabled_false_keeps_an_experiment_off(tmp_path: Path) -> None:
    write(tmp_path, "exp.toml", experiment(extra="enabled = false"))
    library = RuleLibrary.load(tmp_path, quiet=True)
    assert (library.errors, library.ruleset.experiments) == ((), ())
    assert "must be true or false" in one_error(experiment(extra='enabled = "no"'))


def test_a_file_that_is_not_toml_keeps_its_last_good_experiments(tmp_path: Path) -> None:
    write(tmp_path, "exp.toml", AB)
    library = RuleLibrary.load(tmp_path, quiet=True)
    assert [e.id for e in library.ruleset.experiments] == ["hero"]
    write(tmp_path, "exp.toml", AB.replace("weight = 0.5\n\n", "weight = 0.5\n\n[[experim\n"))
    library.reload()
    assert [e.id for e in library.ruleset.experiments] == ["hero"]
    (error,) = library.errors
    assert str(error).startswith(f'{tmp_path / "exp.toml"}:')
    assert "is not valid TOML" in str(error) and "keeping its last good version" in str(error)
    # a valid file with a broken experiment is not "last good": that experiment is off
    write(tmp_path, "exp.toml", AB.replace("weight = 0.5", "weight = 0.4", 1))
    library.reload()
    assert library.ruleset.experiments == ()
    assert "arm weights sum to 0.9" in str(library.errors[0])


def test_a_layer_whose_traffic_adds_up_to_more_than_one_is_refused_at_load(
        tmp_path: Path) -> None:
    """Otherwise assignment could not lay the layer out, and every page would fail."""
    write(tmp_path, "a.toml", experiment("first", extra='layer = "home"\ntraffic = 0.6'))
    write(tmp_path, "b.toml", experiment("second", pages='["/b"]',
                                         extra='layer = "home"\ntraffic = 0.5'))
    write(tmp_path, "c.toml", experiment("third", pages='["/c"]',
                                         extra='layer = "home"\ntraffic = 0.4'))
    library = RuleLibrary.load(tmp_path, quiet=True)
    assert [e.id for e in library.ruleset.experiments] == ["first", "third"]
    assert messages(library.errors) == [
        f'{tmp_path / "b.toml"}:2: experiment "second": traffic: 0.5 would bring layer "home" '
        f'to 1.1 (with first = 0.6 at {tmp_path / "a.toml"}:2); the experiments of a layer '
        "share at most 1 of its visitors: lower traffic or use another layer"]
    slots = plan_layers(e.experiment for e in library.ruleset.experiments)   # no error
    assert (slots["first"].start, slots["third"].end) == (0.0, 1.0)


# -- finding a page's experiments, and arms against rules ------------------------------


def test_experiments_on_matches_globs_regexes_and_hosts(tmp_path: Path) -> None:
    write(tmp_path, "exp.toml", "\n".join((
        experiment("home", pages='["/"]'),
        experiment("products", pages='["/products/*"]'),
        experiment("shop-only", pages='["*"]', extra='hosts = ["shop.example.com"]'),
        experiment("regex", pages='[]\npages_regex = ["^/blog/[0-9]+$"]'))))
    library = RuleLibrary.load(tmp_path, quiet=True)
    assert library.errors == ()
    ruleset = library.ruleset

    def on(host: str, path: str) -> list[str]:
        return [e.id for e in ruleset.experiments_on(host, path)]

    assert on("shop.example.com", "/") == ["home", "shop-only"]
    assert on("shop.example.com:8443", "/products/tent") == ["products", "shop-only"]
    assert on("www.example.com", "/products/") == ["products"]
    assert on("www.example.com", "/product") == []
    assert on("www.example.com", "/blog/42") == ["regex"]
    assert on("www.example.com", "/blog/42/comments") == []
    assert ruleset.experiment("products").pages.globs == ("/products/*",)
    assert ruleset.experiment("nope") is None


def test_an_arm_outranks_a_rule_of_priority_1000_on_the_same_slot(tmp_path: Path) -> None:
    write(tmp_path, "exp.toml", AB)
    write(tmp_path, "rules.toml", '[[rule]]\nid = "top"\npages = ["/"]\npriority = 1000\n'
          'slot = "#hero-headline"\nhtml = "Rule"\n\n[[rule]]\nid = "other-slot"\n'
          'pages = ["/"]\npriority = 1000\nslot = "#cta"\nhtml = "Go"\n')
    library = RuleLibrary.load(tmp_path, quiet=True)
    assert library.errors == ()
    hero = library.ruleset.experiment("hero")
    arm = hero.arm_rule("bold")
    decided = plan(library.ruleset, None, page("/"), arms=[arm])
    verdicts = {d.rule.id: (d.verdict, d.reason, d.winner) for d in decided.decisions}
    assert verdicts["hero:bold"] == (APPLIED, "", None)
    assert verdicts["other-slot"] == (APPLIED, "", None)
    assert verdicts["top"] == (LOST, 'slot "#hero-headline" is taken by rule "hero:bold" (an '
                               'experiment arm: experiment "hero", arm "bold")', "hero:bold")
    # the control changes nothing, so the rule applies for visitors in it
    decided = plan(library.ruleset, None, page("/"), arms=[])
    assert {d.rule.id: d.verdict for d in decided.decisions}["top"] == APPLIED


# -- kairos rules check ------------------------------------------------------------------


SPLIT = """\
[[experiment]]
id = "landing"
pages = ["/promo"]
hosts = ["shop.example.com"]
audience = { "device.kind" = "mobile" }
layer = "landing"
traffic = 0.5
start = 2026-03-01T09:00:00+01:00
end = 2026-04-01T00:00:00Z
goals = [
  { id = "order", kind = "custom", event = "purchase", primary = true },
  { id = "revenue", kind = "revenue", event = "purchase" },
]
arms = [
  { id = "control", weight = 0.5 },
  { id = "long-page", weight = 0.5, redirect = "/promo-long", description = "long copy" },
]

[[experiment]]
id = "cta-bandit"
pages = ["/", "/products/*"]
allocation = "bandit"
bandit = { min_units = 200, min_conversions = 20, floor = 0.05 }
goals = [{ id = "click", kind = "click", selector = "#cta", primary = true }]
arms = [
  { id = "a", weight = 0.34 },
  { id = "b", weight = 0.33, slot = "#cta", text = "Buy" },
  { id = "c", weight = 0.33, slot = "#cta", text = "Get it" },
]
"""


def test_rules_check_lists_the_folders_experiments(tmp_path: Path) -> None:
    write(tmp_path, "exp.toml", AB)
    write(tmp_path, "more.toml", SPLIT)
    write(tmp_path, "rules.toml", '[[rule]]\nid = "top"\npages = ["/"]\npriority = 1000\n'
          'slot = "#hero-headline"\nhtml = "Rule"\n')
    report = check_folder(tmp_path)
    assert report.ok, report.text
    text = report.text
    exp, more = tmp_path / "exp.toml", tmp_path / "more.toml"
    assert f"{tmp_path}: 1 rules in 1 files, 0 segments, 0 errors, 3 experiments\n" in text
    # arms are listed with the rules of their slot, ahead of them
    assert ("\n/\n  #hero-headline\n"
            f'    experiment "hero", arm "bold" ({exp}:2): replace-content; outranks every '
            f"rule\n    top ({tmp_path / 'rules.toml'}:2): replace-content, priority 1000; "
            "everyone\n") in text
    assert f'experiment "cta-bandit", arm "b" ({more}:20): set-text; outranks' in text
    assert (f'\nexperiment "hero" ({exp}:2): Headline test on the home page\n'
            "  pages: /\n"
            "  allocation fixed; no layer; traffic 1; salt hero.v1; start: at once; end: none\n"
            "  arms:\n"
            "    control 0.5: no changes (the page as the origin sends it)\n"
            "    bold 0.5: #hero-headline replace-content\n"
            "  goals: signup (page url /thanks) primary; cta (click selector #cta)\n") in text
    assert (f'\nexperiment "landing" ({more}:2)\n'
            "  pages: shop.example.com/promo\n"
            '  audience: device.kind = "mobile"\n'
            "  allocation fixed; layer landing; traffic 0.5; salt = id; "
            "start 2026-03-01T09:00:00+01:00; end 2026-04-01T00:00:00+00:00\n"
            "  arms:\n"
            "    control 0.5: no changes (the page as the origin sends it)\n"
            "    long-page 0.5: redirect to /promo-long; long copy\n"
            "  goals: order (custom event purchase) primary; revenue (revenue event purchase)\n"
            ) in text
    assert (f'\nexperiment "cta-bandit" ({more}:20)\n'
            "  pages: /, /products/*\n"
            "  allocation bandit (weights below until every arm has 200 visitors and 20 "
            "conversions, then moved toward the better arms, floor 0.05); no layer; "
            "traffic 1; salt = id; start: at once; end: none\n"
            "  arms:\n    a 0.34: no changes (the page as the origin sends it)\n"
            "    b 0.33: #cta set-text\n    c 0.33: #cta set-text\n"
            "  goals: click (click selector #cta) primary\n") in text


def test_rules_check_reports_experiment_errors_and_fails(tmp_path: Path) -> None:
    write(tmp_path, "exp.toml", experiment(arm='redirect = "//evil.com"'))
    report = check_folder(tmp_path)
    assert not report.ok
    at = line_of(experiment(arm='redirect = "//evil.com"'), "redirect")
    assert report.text.startswith(f'{tmp_path / "exp.toml"}:{at}: experiment "split": '
                                  'arms.b.redirect: "//evil.com" must start with a single "/"')
    assert "\nexperiment " not in report.text   # nothing listed: the experiment is off


def test_the_readme_experiment_examples_load(tmp_path: Path) -> None:
    readme = (RULES / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Experiments"):readme.index("## Optimised rules")]
    blocks = re.findall(r"```toml\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 3
    write(tmp_path, "segments.toml", (RULES / "segments.toml").read_text(encoding="utf-8"))
    for i, block in enumerate(blocks):
        write(tmp_path, f"example{i}.toml", block)
    library = RuleLibrary.load(tmp_path, quiet=True)
    assert library.errors == ()
    assert [e.id for e in library.ruleset.experiments] == [
        "hero-headline", "promo-long", "products-intro"]


OPTIMISED = """\
[[rule]]
id = "cta-copy"
pages = ["/"]
slot = "#cta"
priority = 5
optimise = true
audience = { "device.kind" = "mobile" }
segment_by = ["device.kind", "source.class"]
goal = "/checkout/complete"
variants = [
  { id = "shop", text = "Shop the collection" },
  { id = "explore", text = "Explore the gear" },
]

[[rule]]
id = "plain"
pages = ["/"]
slot = "#cta"
text = "Plain"
"""


def test_rules_check_lists_an_optimised_rule_at_its_own_priority(tmp_path: Path) -> None:
    write(tmp_path, "opt.toml", OPTIMISED)
    report = check_folder(tmp_path)
    assert report.ok, report.text
    opt = tmp_path / "opt.toml"
    assert f"{tmp_path}: 1 rules in 1 files, 0 segments, 0 errors, 1 optimised rules\n" \
        in report.text
    variant = (f'optimised rule "cta-copy", variant "{{}}" ({opt}:2): set-text, priority 5; '
               'audience device.kind = "mobile"; one variant per visitor, learned per '
               "device.kind, source.class")
    assert ("\n/\n  #cta\n"
            f"    {variant.format('shop')}\n    {variant.format('explore')}\n"
            f"    plain ({opt}:16): set-text, priority 0; everyone\n") in report.text
    assert (f'\noptimised rule "cta-copy" ({opt}:2)\n  pages: /\n'
            '  audience: device.kind = "mobile"\n'
            "  priority 5; segments: device.kind, source.class\n"
            "  allocation bandit (weights below until every arm has 100 visitors and 40 "
            "conversions, then moved toward the better arms, floor 0.01); no layer; traffic 1; "
            "salt = id; start: at once; end: none\n"
            "  variants:\n    shop 0.5: #cta set-text\n    explore 0.5: #cta set-text\n"
            "  goals: goal (page url /checkout/complete) primary\n") in report.text


def test_rules_check_warns_about_experiments_sharing_a_slot_outside_one_layer(
        tmp_path: Path) -> None:
    from proxy.rules.check import check_folder

    def experiment(eid: str, pages: str, layer: str = "") -> str:
        return (f'[[experiment]]\nid = "{eid}"\npages = {pages}\n'
                + (f'layer = "{layer}"\ntraffic = 0.5\n' if layer else "")
                + 'goals = [{ id = "g", kind = "page", url = "/done", primary = true }]\n'
                '[[experiment.arms]]\nid = "control"\nweight = 0.5\n'
                '[[experiment.arms]]\nid = "b"\nweight = 0.5\nslot = "#hero"\ntext = "B"\n')

    (tmp_path / "a.toml").write_text(experiment("first", '["/"]')
                                     + experiment("second", '["/*"]')
                                     + experiment("elsewhere", '["/products/x"]')
                                     + experiment("l1", '["/x"]', "home")
                                     + experiment("l2", '["/x"]', "home"))
    report = check_folder(tmp_path)
    assert report.ok, report.text
    warnings = [line for line in report.text.splitlines() if line.startswith("warning:")]
    assert any('"first"' in w and '"second"' in w and "#hero" in w and "one layer" in w
               for w in warnings), report.text
    assert not any('"l1"' in w and '"l2"' in w for w in warnings)        # one layer: fine
    assert not any('"first"' in w and '"elsewhere"' in w for w in warnings)   # never share
