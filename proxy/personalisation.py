"""The page transform of a running Kairos: the editors' rules and the experiments' arms, for
visitors who allow them.

Everything that decides what a page becomes meets here, behind the ``PageTransform``
protocol of :mod:`proxy.page`. The experiments are decided before the upstream request
(:mod:`proxy.experimentation`, they may redirect and they set the cookie); their arms reach
this transform as rules that outrank every editor's rule. A visitor who objected to
personalisation, or who is in the global holdout, gets the site's default content (the
origin's bytes), except for the goals script that counts the conversions of experiments
they are already in.
"""

from __future__ import annotations

from typing import Any

from . import goals_script
from .experimentation import NOTHING, PageExperiments
from .page import PageEdit, PageRequest
from .rules import RuleLibrary, RulesTransform, plan
from .rules.compiled import NOT_KNOWN, CompiledPage, compile_page, slots_of
from .rules.engine import render_edit


class Personalisation:
    def __init__(self, library: RuleLibrary, script_src: str = "/_kairos/goals.js",
                 event_url: str = "/_kairos/event") -> None:
        self.library = library
        self.rules = RulesTransform(library)
        self.script_src = script_src
        self.event_url = event_url

    def wants(self, page: PageRequest) -> bool:
        return self.rules.wants(page) or _experiments(page).changes_page

    def apply(self, html: str, page: PageRequest) -> PageEdit | None:
        decided = _experiments(page)
        edit = None
        if not _objected(page) and not decided.holdout:
            # (with arms, the edit is personalised: the arm depends on the visitor)
            edit = render_edit(self.library.ruleset, html, page, decided.arm_rules)
        if decided.script is None:
            return edit
        variant = (lambda: f"{edit.variant};goals") if edit is not None else "goals"
        splices = edit.splices if edit is not None else ()
        place = _goals_place(html, page.compiled)
        if place is not None and splices is not None and _outside(place[0], splices):
            # One more splice on the origin's text: the stored gzip pieces still apply.
            at, nonce = place
            snippet = goals_script.tag(self.script_src, self.event_url, decided.script,
                                       decided.click_selectors, nonce)
            every = (*splices, (at, at, snippet))
            return PageEdit(None, variant, True, every, source=html)
        base = edit.html if edit is not None else html
        injected = goals_script.inject(base, self.script_src, self.event_url, decided.script,
                                       decided.click_selectors)
        if injected is None:
            return edit
        return PageEdit(injected, variant, personalised=True)

    def prepared_for(self) -> object:
        """What a compiled page depends on: the rule set (a reload makes a new one)."""
        return self.library.ruleset

    def prepare(self, html: str, host: str, path: str) -> CompiledPage:
        """Compile a cached page for every slot a rule or experiment arm of it may change
        (whoever the visitor is), so its views need no parse (proxy.rules.compiled)."""
        ruleset = self.library.ruleset
        arms = [rule for d in ruleset.experiments_on(host, path) for a in d.arms
                if (rule := d.arm_rule(a.arm)) is not None]
        return compile_page(html, slots_of([*ruleset.candidates(host, path), *arms]))

    def describe(self, page: PageRequest) -> list[dict[str, Any]]:
        """For /why: every rule of this page, with its verdict and the reason."""
        decided = _experiments(page)
        decisions = [d.to_dict() for d in plan(self.library.ruleset, page.context, page,
                                               decided.arm_rules).decisions]
        if _objected(page) or decided.holdout:
            reason = ("you opted out" if _objected(page)
                      else "you are in the holdout group that sees the site unpersonalised")
            for decision in decisions:
                decision["verdict"], decision["reason"] = "not_applied", reason
        return decisions


def _goals_place(html: str, compiled: CompiledPage | None) -> goals_script.Place | None:
    """Where the goals script goes in ``html``. A 100 KB page takes ~0.3 ms to scan, so a
    cached page's place is found on the first view that needs it and kept on its compiled
    page, which the cache drops with the page."""
    if compiled is None or compiled.source is not html:
        return goals_script.placement(html)
    if compiled.goals_place is NOT_KNOWN:
        compiled.goals_place = goals_script.placement(html)
    return compiled.goals_place


def _outside(at: int, splices: tuple[tuple[int, int, str], ...]) -> bool:
    """Is ``at`` inside none of the splices?"""
    for start, end, _ in splices:  # noqa: SIM110 (a loop: no generator per view)
        if start < at < end:
            return False
    return True


def _experiments(page: PageRequest) -> PageExperiments:
    decided = page.experiments
    return decided if isinstance(decided, PageExperiments) else NOTHING


def _objected(page: PageRequest) -> bool:
    context = page.context
    return context is not None and getattr(context, "privacy_reason", "") == "opted_out"
