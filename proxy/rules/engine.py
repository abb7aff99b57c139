"""The rules as a :class:`proxy.page.PageTransform`: decide (plan), render, splice.

``wants`` runs before the upstream request of every GET, so it only asks the page index
(host and path); the visitor is looked at in ``apply``, once the page is in hand. When no
applied rule's slot is on the page, ``apply`` returns None and the origin's bytes go out
unchanged (F6) - without even parsing the page when the slot's id does not occur in it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from proxy.page import PageEdit, PageRequest
from proxy.rules import html as rewriting
from proxy.rules.compiled import CompiledPage
from proxy.rules.model import Change, Placeholder, Rule
from proxy.rules.placeholders import render as render_template
from proxy.rules.plan import Plan, getter, plan
from proxy.rules.ruleset import RuleSet

_ID = re.compile(r"#((?:[A-Za-z0-9_-]|\\.)+)")
_SPACE = re.compile(r"\s*")
_DOCTYPE = re.compile(r"<!doctype\s+html[\s>]", re.I)


@dataclass(frozen=True, slots=True)
class Rendered:
    """What happened on one page: the plan, the edit (None: page unchanged) and, per
    applied rule and slot, how many elements matched and changed."""

    plan: Plan
    edit: PageEdit | None
    slots: tuple[rewriting.SlotResult, ...] = ()


class RulesTransform:
    """``RulesTransform(library)`` follows the library's reloads; ``RulesTransform(ruleset)``
    stays on one fixed rule set (tests, ``kairos explain``)."""

    def __init__(self, rules: Any) -> None:
        self._rules = rules

    @property
    def ruleset(self) -> RuleSet:
        rules = self._rules
        return rules if isinstance(rules, RuleSet) else rules.ruleset

    def wants(self, page: PageRequest) -> bool:
        return self.ruleset.wants(page.host, page.path)

    def apply(self, html: str, page: PageRequest) -> PageEdit | None:
        return render(self.ruleset, html, page).edit


def render(ruleset: RuleSet, html: str, page: PageRequest, arms: Sequence[Rule] = ()
           ) -> Rendered:
    """Plan for ``page.context`` and apply the winning rules (and experiment ``arms``)
    to ``html``."""
    decided = plan(ruleset, page.context, page, arms)
    rules = decided.applied
    compiled = getattr(page, "compiled", None)
    if not isinstance(compiled, CompiledPage) or compiled.source is not html:
        compiled = None   # (a compiled page knows where its slots are: no need to look)
    if not rules or (compiled is None and not any(_may_occur(s, html) for r in rules
                                                  for s in r.slots)):
        return Rendered(decided, None)
    get = getter(page.context)
    requests = [rewriting.SlotRequest(rule.id, selector, tuple([_op(c, get) for c in changes]))
                for rule in rules for selector, changes in rule.changes_by_slot]
    if compiled is not None:
        result = compiled.rewrite(requests)   # a cached page: no parse (identical output)
    else:
        result = rewriting.rewrite(html, requests)
    if not result.edits:
        return Rendered(decided, None, result.results)
    changed = list(dict.fromkeys(s.key for s in result.results if s.changed))
    by_id = {r.id: r for r in rules}
    edit = PageEdit(variant=lambda: _variant([by_id[i] for i in changed], requests),
                    personalised=any(by_id[i].personal for i in changed),
                    splices=result.edits, source=html)
    return Rendered(decided, edit, result.results)


def _op(change: Change, get: Any) -> rewriting.Op:
    return rewriting.Op(change.action, render_template(change.content, get),
                        change.attribute, change.classes)


def _variant(rules: list[Rule], requests: Sequence[rewriting.SlotRequest]) -> str:
    """The applied rule ids, plus, when their content has placeholders, a fingerprint of
    what was rendered (two cities must not share a validator). The rendered ops are at hand
    already; reading the placeholders' values again cost ~20 µs a view."""
    ids = ",".join(r.id for r in rules)
    if not any(isinstance(part, Placeholder) for r in rules for c in r.changes
               for part in c.content):
        return ids
    shown = {r.id for r in rules}
    rendered = "\0".join(op.html for request in requests if request.key in shown
                         for op in request.ops)
    digest = hashlib.blake2s(rendered.encode(), digest_size=6).hexdigest()
    return f"{ids};{digest}"


def _may_occur(selector: str, html: str) -> bool:
    """False when the selector needs an id that is nowhere in the page: no parse needed.
    In quirks mode (no doctype) ids match ignoring case, so there the page is parsed."""
    found = _ID.search(selector)
    if (found is None or "," in selector or "\\" in found.group(1)
            or "(" in selector[:found.start()]):  # :not(#x) matches pages without x
        return True
    ident = found.group(1)
    return ident in html or not _standards_mode(html)  # quirks: lexbor ignores id case


def _standards_mode(html: str) -> bool:
    """Does the page start (after comments) with an HTML doctype? (A few legacy public
    identifiers of HTML 4 mean quirks mode all the same; for those a slot whose id differs
    in case from the page's is missed, and the page goes out unchanged.)"""
    pos = 0
    while True:
        pos = _SPACE.match(html, pos).end()  # type: ignore[union-attr]
        if not html.startswith("<!--", pos):
            return _DOCTYPE.match(html, pos) is not None
        pos = html.find("-->", pos + 4)
        if pos < 0:
            return False
        pos += 3
