"""The page transform of a running Kairos: the editors' rules, for visitors who allow them.

Everything that decides what a page becomes meets here, behind the ``PageTransform``
protocol of :mod:`proxy.page`: the rules engine today, experiment arms next to it. A visitor
who objected to personalisation gets the site's default content (the origin's bytes).
"""

from __future__ import annotations

from typing import Any

from .page import PageEdit, PageRequest
from .rules import RuleLibrary, RulesTransform, plan


class Personalisation:
    def __init__(self, library: RuleLibrary) -> None:
        self.library = library
        self.rules = RulesTransform(library)

    def wants(self, page: PageRequest) -> bool:
        return self.rules.wants(page)

    def apply(self, html: str, page: PageRequest) -> PageEdit | None:
        if _objected(page):
            return None
        return self.rules.apply(html, page)

    def describe(self, page: PageRequest) -> list[dict[str, Any]]:
        """For /why: every rule of this page, with its verdict and the reason."""
        decisions = [d.to_dict() for d in plan(self.library.ruleset, page.context, page)
                     .decisions]
        if _objected(page):
            for decision in decisions:
                decision["verdict"], decision["reason"] = "not_applied", "you opted out"
        return decisions


def _objected(page: PageRequest) -> bool:
    context = page.context
    return context is not None and getattr(context, "privacy_reason", "") == "opted_out"
