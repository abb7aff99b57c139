"""Rules with ``optimise = true`` (proxy.rules.optimise): what loads, what is refused and how
the message says so (file:line, rule, field, what would be valid), ids shared with the
folder's rules and experiments, ``enabled = false``, ``kairos rules check``, and the
example in rules/README.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from proxy.rules.check import check_folder
from proxy.rules.loader import RuleLibrary
from proxy.rules.model import RuleError
from proxy.rules.parse import FileRules, parse_file

from .test_rules_support import RULES

VARIANTS = """\
variants = [
  { id = "shop", text = "Shop the collection" },
  { id = "explore", text = "Explore the gear" },
]
"""


def optimised(rid: str = "cta-copy", extra: str = "", *, goal: str = 'goal = "/done"',
              variants: str = VARIANTS, pages: str = '["/"]') -> str:
    return (f'[[rule]]\nid = "{rid}"\npages = {pages}\nslot = "#cta"\noptimise = true\n'
            f"{goal}\n{extra}\n{variants}")


PLAIN = '[[rule]]\nid = "{}"\npages = ["/"]\nslot = "#cta"\ntext = "Plain"\n'
EXPERIMENT = """\
[[experiment]]
id = "{}"
pages = ["/"]
goals = [{{ id = "done", kind = "page", url = "/done", primary = true }}]
arms = [{{ id = "a", weight = 0.5 }}, {{ id = "b", weight = 0.5, slot = "h1", text = "B" }}]
"""


def parse(text: str, name: str = "opt.toml") -> FileRules:
    return parse_file(text.encode(), name, f"rules/{name}")


def messages(errors: tuple[RuleError, ...] | list[RuleError]) -> list[str]:
    return [str(e) for e in errors]


def one_error(text: str) -> str:
    parsed = parse(text)
    assert len(parsed.errors) == 1, messages(parsed.errors)
    assert parsed.experiments == () and parsed.rules == ()
    return str(parsed.errors[0])


def line_of(text: str, needle: str, after: int = 0) -> int:
    lines = text.splitlines()
    return next(i + 1 for i in range(after, len(lines)) if needle in lines[i])


def write(folder: Path, name: str, text: str) -> Path:
    (folder / name).write_text(text, encoding="utf-8")
    return folder / name


def load(folder: Path) -> RuleLibrary:
    return RuleLibrary.load(folder, quiet=True)


# -- what loads ------------------------------------------------------------------------


def test_an_optimised_rule_is_a_bandit_with_equal_variants_and_its_own_priority() -> None:
    text = optimised(extra='priority = 5\nsegment_by = ["device.kind"]\n',
                     goal='goal = { kind = "click", selector = "#cta" }',
                     variants=VARIANTS.replace('"Explore the gear" }',
                                               '"Explore the gear", description = "calm" }'))
    parsed = parse(text)
    assert parsed.errors == () and parsed.rules == ()
    (definition,) = parsed.experiments
    assert (definition.id, definition.optimised, definition.priority, definition.segment_by,
            definition.where) == ("cta-copy", True, 5, ("device.kind",), "rules/opt.toml:2")
    e = definition.experiment
    assert [(a.id, a.weight) for a in e.arms] == [("shop", 0.5), ("explore", 0.5)]
    assert (e.primary_goal.kind, e.primary_goal.target) == ("click", "#cta")
    assert definition.content("explore").description == "calm"


def test_optimise_false_without_variants_is_a_plain_rule() -> None:
    parsed = parse(PLAIN.format("plain") + "optimise = false\n")
    assert parsed.errors == () and [r.id for r in parsed.rules] == ["plain"]


def test_a_plain_rule_with_a_goal_is_told_it_needs_optimise() -> None:
    text = PLAIN.format("plain") + 'goal = "/done"\n'
    assert one_error(text) == (
        f'rules/opt.toml:{line_of(text, "goal")}: rule "plain": goal: applies only to an '
        "optimised rule: add optimise = true and variants, or remove goal")


# -- 1. the goal is checked like an experiment's ---------------------------------------


@pytest.mark.parametrize(("goal", "says"), [
    ('goal = "checkout/complete"', 'url "checkout/complete" is not a path: paths start with '
                                   '"/" (a glob as in pages: "/thanks", "/checkout/*")'),
    ('goal = { kind = "click", selector = "a[href" }',
     'selector "a[href" has an unclosed bracket, parenthesis or quote; give a CSS selector'),
    ('goal = { kind = "custom", event = "add to cart" }',
     'event "add to cart" is not an event name that kairos.track() or Kairos-Event can report'),
])
def test_a_goal_that_could_never_convert_is_refused(goal: str, says: str) -> None:
    text = optimised(goal=goal)
    message = one_error(text)
    assert message.startswith(f'rules/opt.toml:{line_of(text, "goal")}: rule "cta-copy": '
                              "goal: ")
    assert says in message


# -- 2. enabled = false ----------------------------------------------------------------


def test_enabled_false_lists_an_optimised_rule_as_disabled(tmp_path: Path) -> None:
    write(tmp_path, "opt.toml", optimised(extra="enabled = false"))
    library = load(tmp_path)
    assert library.errors == ()
    assert (library.ruleset.disabled, library.ruleset.experiments) == (("cta-copy",), ())
    report = check_folder(tmp_path)
    assert report.ok and "1 disabled (cta-copy)" in report.text
    assert '\noptimised rule "cta-copy"' not in report.text


def test_a_disabled_optimised_rule_is_still_checked() -> None:
    text = optimised(extra="enabled = false", goal="")
    parsed = parse(text)
    assert parsed.disabled == () and messages(parsed.errors) == [
        'rules/opt.toml:2: rule "cta-copy": goal: is missing: the conversion to optimise for, '
        'e.g. goal = "/checkout/complete" (a page, a path glob as in pages) or goal = { kind = '
        '"click", selector = "#cta" } (kinds: page with url, click with selector, custom or '
        "revenue with event)"]


# -- 3. ids ----------------------------------------------------------------------------


def test_a_plain_rule_in_a_later_file_may_not_reuse_an_optimised_rules_id(
        tmp_path: Path) -> None:
    a = write(tmp_path, "a.toml", optimised())
    b = write(tmp_path, "b.toml", PLAIN.format("cta-copy"))
    library = load(tmp_path)
    assert library.ruleset.rules == ()
    assert [e.id for e in library.ruleset.experiments] == ["cta-copy"]
    assert messages(library.errors) == [
        f'{b}:2: rule "cta-copy": id: id is already used by the optimised rule at {a}:2; ids '
        "must be unique in the folder"]


def test_an_optimised_rule_in_a_later_file_may_not_reuse_a_plain_rules_id(
        tmp_path: Path) -> None:
    a = write(tmp_path, "a.toml", PLAIN.format("cta-copy"))
    b = write(tmp_path, "b.toml", optimised())
    library = load(tmp_path)
    assert [r.id for r in library.ruleset.rules] == ["cta-copy"]
    assert library.ruleset.experiments == ()
    assert messages(library.errors) == [
        f'{b}:2: rule "cta-copy": id: id is already used by {a}:2; ids must be unique in the '
        "folder"]


def test_two_optimised_rules_with_one_id_are_reported_as_rules(tmp_path: Path) -> None:
    a = write(tmp_path, "a.toml", optimised())
    b = write(tmp_path, "b.toml", optimised(pages='["/b"]'))
    library = load(tmp_path)
    assert [e.file for e in library.ruleset.experiments] == [str(a)]
    assert messages(library.errors) == [
        f'{b}:2: rule "cta-copy": id: id is already used by the optimised rule at {a}:2; ids '
        "must be unique in the folder"]


def test_an_optimised_rule_and_a_plain_rule_in_one_file() -> None:
    text = PLAIN.format("cta-copy") + "\n" + optimised()
    parsed = parse(text)
    assert [r.id for r in parsed.rules] == ["cta-copy"] and parsed.experiments == ()
    assert messages(parsed.errors) == [
        f'rules/opt.toml:{line_of(text, "id =", 2)}: rule "cta-copy": id: is used by an '
        "earlier rule in this file; ids must be unique"]


def test_an_optimised_rule_may_not_reuse_an_experiments_id(tmp_path: Path) -> None:
    a = write(tmp_path, "a.toml", EXPERIMENT.format("cta-copy"))
    b = write(tmp_path, "b.toml", optimised())
    library = load(tmp_path)
    assert [(e.id, e.optimised) for e in library.ruleset.experiments] == [("cta-copy", False)]
    assert messages(library.errors) == [
        f'{b}:2: rule "cta-copy": id: id is already used by experiment "cta-copy" at {a}:2; '
        "an optimised rule is counted as an experiment under its id, so its id must differ "
        "from every [[experiment]]'s"]


def test_an_experiment_may_not_reuse_an_optimised_rules_id(tmp_path: Path) -> None:
    a = write(tmp_path, "a.toml", optimised())
    b = write(tmp_path, "b.toml", EXPERIMENT.format("cta-copy"))
    library = load(tmp_path)
    assert [(e.id, e.optimised) for e in library.ruleset.experiments] == [("cta-copy", True)]
    assert messages(library.errors) == [
        f'{b}:2: experiment "cta-copy": id is already used by the optimised rule at {a}:2; an '
        "optimised rule is counted as an experiment under its id, so an [[experiment]] must "
        "have another id"]


def test_an_optimised_rule_and_an_experiment_in_one_file_the_first_keeps_the_id(
        tmp_path: Path) -> None:
    text = optimised() + "\n" + EXPERIMENT.format("cta-copy")
    path = write(tmp_path, "one.toml", text)
    library = load(tmp_path)
    assert [(e.id, e.optimised) for e in library.ruleset.experiments] == [("cta-copy", True)]
    second = line_of(text, 'id = "cta-copy"', 2)
    assert messages(library.errors) == [
        f'{path}:{second}: experiment "cta-copy": id is already used by the optimised rule at '
        f"{path}:2; an optimised rule is counted as an experiment under its id, so an "
        "[[experiment]] must have another id"]


def test_a_plain_rule_and_an_experiment_may_share_an_id(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", PLAIN.format("hero"))
    write(tmp_path, "b.toml", EXPERIMENT.format("hero"))
    library = load(tmp_path)
    assert library.errors == ()
    assert ([r.id for r in library.ruleset.rules], [e.id for e in library.ruleset.experiments]
            ) == (["hero"], ["hero"])


# -- 4. messages -----------------------------------------------------------------------

EXAMPLE = ('e.g. variants = [{ id = "shop", text = "Shop now" }, { id = "explore", '
           'text = "Explore" }]')
VARIANT_KEYS = "id, description, slot, action, html, text, attribute, value, class"


@pytest.mark.parametrize(("text", "needle", "says"), [
    (optimised(goal=""), 'id = "cta-copy"',
     'goal: is missing: the conversion to optimise for, e.g. goal = "/checkout/complete"'),
    (optimised(goal="goal = 3"), "goal",
     'goal: 3 is neither a page nor a goal table: goal = "/checkout/complete"'),
    (optimised(goal='goal = { kind = "click", selecter = "#cta" }'), "goal",
     'goal: unknown key "selecter"; did you mean "selector"?; a goal table takes: kind, url, '
     "selector, event"),
    (optimised(goal='goal = { selector = "#cta" }'), "goal", "goal: has no kind: goal = "),
    (optimised(goal='goal = { kind = "click", url = "/x" }'), "goal",
     "goal: a click goal takes selector, not url"),
    (optimised(variants='variants = [{ id = "only", text = "Alone" }]\n'), "variants",
     f"variants: has 1 variant; an optimised rule needs at least 2 to compare, {EXAMPLE}"),
    (optimised(variants='variants = "shop"\n'), "variants",
     f"variants: must be a list of tables, each with an id and its change, {EXAMPLE}"),
    (optimised(variants=VARIANTS.replace('text = "Explore', 'txet = "Explore')), "txet",
     f'variants.explore: unknown key "txet"; did you mean "text"?; a variant takes: '
     f"{VARIANT_KEYS}"),
    (optimised(variants=VARIANTS.replace('"explore"', '"shop"')), '{ id = "shop", text = "Exp',
     'variants[1].id: "shop" is the id of an earlier variant too; each variant needs its own '
     "id (results are counted per variant)"),
    (optimised(variants=VARIANTS.replace('id = "explore", ', "")), '{ text = "Explore',
     'variants[1]: has no id: give each variant an id = "..." (its results are counted under '
     "it)"),
    (optimised(variants=VARIANTS.replace('"explore"', '"explore gear"')), "explore gear",
     "variants[1].id: 'explore gear' is not a valid variant id: 1-64 characters"),
    (optimised(variants=VARIANTS.replace(', text = "Explore the gear"', "")), '"explore"',
     'variants.explore: shows nothing: give it a change, e.g. text = "..." or html = "..." '
     '(in the rule\'s slot, or its own slot = "..."), or action = "remove"'),
    (optimised(variants=VARIANTS.replace('text = "Explore the gear"', 'html = "<b>x"')),
     '"explore"', "variants.explore.html: the HTML is not self-contained: <b> is never "
     "closed"),
    (optimised(extra='segment_by = ["device.knd"]'), "segment_by",
     'segment_by: unknown attribute "device.knd"; did you mean "device.kind"?; give context '
     'attributes as in audience, e.g. "device.kind", "source.class", "geo.country"'),
    (optimised(extra='segment_by = ["device.kind", "device.kind"]'), "segment_by",
     'segment_by: "device.kind" is listed twice'),
    (optimised(extra='segment_by = ["device.kind", "source.class", "geo.country", '
                     '"time.part_of_day"]'), "segment_by",
     "segment_by: has 4 attributes; at most 3 (each one multiplies the segments, and each "
     "segment needs its own data): keep the ones that matter most"),
    (optimised("c" * 41), 'id = "ccc',
     "id: has 41 characters; an optimised rule's id may have at most 40, because its "
     'segments are counted under "<id>@<segment>", which must fit in 64: shorten the id'),
    (optimised().replace("optimise = true", "optimise = false"), "optimise",
     "optimise: is false, but the rule has variants: set optimise = true to learn which "
     "variant converts best, or remove variants and give the rule one change (enabled = "
     "false turns a rule off)"),
    (optimised().replace("optimise = true", 'optimise = "yes"'), "optimise",
     "optimise: must be true or false, not 'yes'"),
    (optimised().replace("optimise = true\n", ""), "variants",
     "optimise: is missing: a rule with variants needs optimise = true"),
    (optimised(extra="schedule = { hours = [9, 10] }"), "schedule",
     "schedule: is not supported in an optimised rule: the bandit compares its variants on "
     "the same visitors at all hours"),
    (optimised(extra='html = "<b>Buy</b>"'), "html",
     'html: belongs in each variant of an optimised rule: give every variant its own html, '
     'e.g. variants = [{ id = "a", html = "..." }, { id = "b", html = "..." }]'),
    (optimised(extra="bandit = { floor = 2 }"), "bandit",
     "bandit: floor: 2 is outside 0..1; give a share from 0 to 1"),
    (optimised(extra="segmnet_by = []"), "segmnet_by",
     'unknown key "segmnet_by" in an optimised rule; did you mean "segment_by"?; valid: id, '),
    (optimised(extra="priority = 5000"), "priority",
     "priority: 5000 is not a whole number from -1000 to 1000 (higher wins)"),
])
def test_each_problem_names_what_where_and_what_would_be_valid(text: str, needle: str,
                                                               says: str) -> None:
    message = one_error(text)
    rid = re.search(r'id = "([^"]*)"', text).group(1)   # type: ignore[union-attr]
    assert message.startswith(f'rules/opt.toml:{line_of(text, needle)}: rule "{rid}": {says}'), \
        message


def test_a_variant_problem_is_reported_at_that_variants_table() -> None:
    text = ('[[rule]]\nid = "cta"\npages = ["/"]\nslot = "#cta"\noptimise = true\n'
            'goal = "/done"\n\n[[rule.variants]]\nid = "a"\ntext = "A"\n\n'
            '[[rule.variants]]\nid = "b"\nhtml = "<b>unclosed"\n\n'
            '[[rule.variants]]\nid = "a"\ntext = "again"\n')
    first = one_error(text)
    assert first.startswith(f'rules/opt.toml:{line_of(text, "<b>unclosed")}: rule "cta": '
                            "variants.b.html: ")
    fixed = text.replace("<b>unclosed", "<b>closed</b>")
    again = line_of(fixed, 'id = "a"', 10)
    assert one_error(fixed).startswith(
        f'rules/opt.toml:{again}: rule "cta": variants[2].id: "a" is the id of an earlier '
        "variant too")


def test_a_bad_optimised_rule_is_off_and_the_rest_of_the_file_loads() -> None:
    text = optimised("bad", goal="") + "\n" + optimised("good") + "\n" + PLAIN.format("plain")
    parsed = parse(text)
    assert [e.id for e in parsed.experiments] == ["good"]
    assert [r.id for r in parsed.rules] == ["plain"]
    assert len(parsed.errors) == 1 and 'rule "bad": goal: is missing' in str(parsed.errors[0])


def test_an_audience_on_an_unknown_segment_names_the_rule(tmp_path: Path) -> None:
    path = write(tmp_path, "opt.toml", optimised(extra='audience = { segment = "mobil" }'))
    write(tmp_path, "segments.toml", '[segment.mobile]\n"device.kind" = "mobile"\n')
    library = load(tmp_path)
    assert library.ruleset.experiments == ()
    assert messages(library.errors) == [
        f'{path}:2: rule "cta-copy": audience: unknown segment "mobil"; did you mean '
        '"mobile"?; defined: "mobile"']


# -- 5. kairos rules check -------------------------------------------------------------


def test_rules_check_lists_variants_goal_segments_and_priority(tmp_path: Path) -> None:
    path = write(tmp_path, "opt.toml", optimised(
        extra='priority = -3\nsegment_by = "source.class"\ndescription = "CTA copy"',
        goal='goal = { kind = "custom", event = "signup" }'))
    report = check_folder(tmp_path)
    assert report.ok, report.text
    assert "0 errors, 1 optimised rules\n" in report.text
    assert (f'\noptimised rule "cta-copy" ({path}:2): CTA copy\n  pages: /\n'
            "  priority -3; segments: source.class\n") in report.text
    assert ("  variants:\n    shop 0.5: #cta set-text\n    explore 0.5: #cta set-text\n"
            "  goals: goal (custom event signup) primary\n") in report.text
    assert (f'    optimised rule "cta-copy", variant "shop" ({path}:2): set-text, priority -3; '
            "everyone; one variant per visitor, learned per source.class\n") in report.text


def test_rules_check_reports_an_optimised_rules_problem_and_fails(tmp_path: Path) -> None:
    text = optimised(extra="schedule = { hours = [9] }")
    path = write(tmp_path, "opt.toml", text)
    report = check_folder(tmp_path)
    assert not report.ok
    assert report.text.startswith(f'{path}:{line_of(text, "schedule")}: rule "cta-copy": '
                                  "schedule: is not supported in an optimised rule")
    assert '\noptimised rule "cta-copy"' not in report.text


# -- 6. the README ---------------------------------------------------------------------


def test_the_readme_optimised_rule_example_loads(tmp_path: Path) -> None:
    readme = (RULES / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Optimised rules"):]
    section = section[:section.find("\n## ")] if "\n## " in section else section
    blocks = re.findall(r"```toml\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 1
    write(tmp_path, "example.toml", blocks[0])
    library = load(tmp_path)
    assert library.errors == ()
    (definition,) = library.ruleset.experiments
    assert (definition.id, definition.optimised, definition.priority, definition.segment_by
            ) == ("cta-copy", True, 5, ("device.kind", "source.class"))
    assert [a.id for a in definition.experiment.arms] == ["shop", "explore", "sale"]
    assert definition.experiment.bandit.segment_prior_strength == 500
    for key in ("optimise", "variants", "goal", "segment_by", "bandit",
                "segment_prior_strength", "kairos results", "@<segment>", "40", "schedule"):
        assert key in section, key
