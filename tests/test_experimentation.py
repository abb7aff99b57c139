"""Experimentation without the proxy: what is worked out once per rule set (the goals that
need the script, per experiment and per segment) gives what working it out on every page
view gave, and a reload of the rules folder starts anew."""

from __future__ import annotations

import random
from pathlib import Path

from experiments.model import GoalKind
from proxy.context.build import build_context
from proxy.context.identity import Membership, VisitorState
from proxy.context.model import RequestFacts
from proxy.context.settings import ContextSettings
from proxy.experimentation import SCRIPT_KINDS, Experimentation
from proxy.rules import RuleLibrary
from proxy.rules.ruleset import RuleSet

SECRET = "test-secret-0123456789abcdef"
NOW = 1_763_859_123.0
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")


def experiment(exp_id: str, goals: str) -> str:
    return f'''
[[experiment]]
id = "{exp_id}"
pages = ["/{exp_id}"]
goals = [{goals}]
[[experiment.arms]]
id = "control"
weight = 0.5
[[experiment.arms]]
id = "b"
weight = 0.5
slot = "#{exp_id}"
text = "b"
'''


FIRST = (experiment("hero", '{ id = "done", kind = "page", url = "/done", primary = true },'
                            '{ id = "cta", kind = "click", selector = "#cta" },'
                            '{ id = "more", kind = "click", selector = ".more" }')
         + experiment("calm", '{ id = "done", kind = "page", url = "/done", primary = true }')
         + experiment("shop", '{ id = "buy", kind = "revenue", event = "purchase", '
                              'primary = true },'
                              '{ id = "cta", kind = "click", selector = "#cta" }')
         + '''
[[rule]]
id = "copy"
pages = ["/copy"]
slot = "#copy"
optimise = true
segment_by = ["device.kind"]
goal = { kind = "click", selector = "#copy-link" }
variants = [{ id = "one", text = "One" }, { id = "two", text = "Two" }]
''')
# The reload: hero's clicks change, calm now needs the script, shop is gone.
SECOND = (experiment("hero", '{ id = "done", kind = "page", url = "/done", primary = true },'
                             '{ id = "cta", kind = "click", selector = "#new-cta" }')
          + experiment("calm", '{ id = "done", kind = "page", url = "/done", primary = true },'
                               '{ id = "signup", kind = "custom", event = "signup" }'))


def load(folder: Path, text: str) -> RuleSet:
    folder.mkdir(exist_ok=True)
    (folder / "e.toml").write_text(text)
    library = RuleLibrary.load(str(folder), quiet=True)
    assert not library.errors, library.errors
    return library.ruleset


def expected(ruleset: RuleSet, state: VisitorState) -> tuple[tuple[str, ...], bool]:
    """The click selectors and whether the script is needed, straight from the goals."""
    goals = {d.id: d.experiment.goals for d in ruleset.experiments}
    selectors: dict[str, None] = {}
    needed = False
    for member in state.experiments:
        for goal in goals.get(member.experiment.partition("@")[0], ()) if member.exposed else ():
            needed = needed or goal.kind in SCRIPT_KINDS
            if goal.kind is GoalKind.CLICK:
                selectors[goal.target] = None
    return tuple(selectors), needed


def page_view(runtime: Experimentation, state: VisitorState) -> tuple[tuple[str, ...], bool]:
    facts = RequestFacts(client_ip="203.0.113.9", peer_trusted=False, method="GET",
                         scheme="https", host="shop.test", path="/elsewhere", user_agent=CHROME)
    context = build_context(facts, state, ContextSettings(), NOW, None)
    decided = runtime.on_page(context, "shop.test", "/elsewhere", "", NOW)
    assert decided.state is not None
    assert decided.state.experiments == state.experiments   # no experiment on this page
    return decided.click_selectors, decided.script is not None


def test_script_goals_follow_the_memberships_and_the_reloaded_rules(tmp_path: Path) -> None:
    current = [load(tmp_path / "first", FIRST)]
    runtime = Experimentation(lambda: current[0], (SECRET,))
    names = ["hero", "calm", "shop", "copy@desktop", "copy@mobile", "copy", "gone", "gone@x"]
    rng = random.Random(4)
    for second in (False, True):
        if second:
            current[0] = load(tmp_path / "second", SECOND)
        for _ in range(150):
            members = tuple(Membership(name, "b", 1, rng.random() < 0.7)
                            for name in rng.sample(names, rng.randint(0, 5)))
            state = VisitorState("ab" * 16, int(NOW) - 100, int(NOW) - 100, int(NOW) - 60,
                                 experiments=members)
            assert page_view(runtime, state) == expected(current[0], state)
