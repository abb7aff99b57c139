"""The rules as a :class:`proxy.page.PageTransform`: decide (plan), render, splice.

``wants`` runs before the upstream request of every GET, so it only asks the page index
(host and path); the visitor is looked at in ``apply``, once the page is in hand. When no
applied rule's slot is on the page, ``apply`` returns None and the origin's bytes go out
unchanged (F6) - without even parsing the page when the slot's id does not occur in it.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from proxy.page import PageEdit, PageRequest
from proxy.rules import html as rewriting
from proxy.rules.compiled import CompiledPage
from proxy.rules.edits import Op
from proxy.rules.model import Change, Rule, Template, has_placeholders
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
        return render_edit(self.ruleset, html, page)


def render(ruleset: RuleSet, html: str, page: PageRequest, arms: Sequence[Rule] = ()
           ) -> Rendered:
    """Plan for ``page.context`` and apply the winning rules (and experiment ``arms``)
    to ``html``. An edit with arms is personalised: the visitor's arm shows in it."""
    return Rendered(*_render(ruleset, html, page, arms))


def render_edit(ruleset: RuleSet, html: str, page: PageRequest, arms: Sequence[Rule] = ()
                ) -> PageEdit | None:
    """``render(...).edit``, for the proxy's views, which need nothing else."""
    return _render(ruleset, html, page, arms)[1]


def _render(ruleset: RuleSet, html: str, page: PageRequest, arms: Sequence[Rule]
            ) -> tuple[Plan, PageEdit | None, tuple[rewriting.SlotResult, ...]]:
    decided = plan(ruleset, page.context, page, arms)
    rules = decided.applied
    compiled = getattr(page, "compiled", None)
    if not isinstance(compiled, CompiledPage) or compiled.source is not html:
        compiled = None   # (a compiled page knows where its slots are: no need to look)
    if not rules or (compiled is None and not any(_may_occur(s, html) for r in rules
                                                  for s in r.slots)):
        return decided, None, ()
    recipe = _recipe(decided, page.context is not None)
    get = getter(page.context)
    requests = []
    for slot in recipe.slots:
        request = slot.request
        if request is None:
            request = _request(slot, get)
        requests.append(request)
    if compiled is not None:
        result = compiled.rewrite(requests)   # a cached page: no parse (identical output)
    else:
        result = rewriting.rewrite(html, requests)
    if not result.edits:
        return decided, None, result.results
    changed: list[str] = []   # the ids of the rules that changed the page, each once
    for slot_result in result.results:
        if slot_result.changed and slot_result.key not in changed:
            changed.append(slot_result.key)
    personalised = bool(arms)
    if not personalised:
        personal = recipe.personal
        for rule_id in changed:
            if rule_id in personal:
                personalised = True
                break
    edit = PageEdit(variant=lambda: _variant(recipe, changed, requests),
                    personalised=personalised, splices=result.edits, source=html)
    return decided, edit, result.results


@dataclass(frozen=True, slots=True, eq=False)
class _Slot:
    """One slot of one rule, as rendering it needs: made once per rule (:func:`_slots_of`),
    so the ops of literal changes (and the whole request when all are literal) are built
    once, not on every view. Compared and hashed by identity (a key of
    :data:`_requests`)."""

    key: str                          # the rule's id
    selector: str
    changes: tuple[Change, ...]
    ops: tuple[Op | None, ...]        # per change: its op, None when it has placeholders
    templates: tuple[Template, ...]   # the contents with placeholders, in order
    request: rewriting.SlotRequest | None   # the same on every view: no placeholders


@dataclass(frozen=True, slots=True, eq=False)
class _Recipe:
    """What rendering one plan needs, derived once from its applied rules."""

    slots: tuple[_Slot, ...]          # every slot of every applied rule, in rank order
    personal: frozenset[str]          # ids of the rules that depend on the visitor
    placeholders: frozenset[str]      # ids of the rules whose content has placeholders


# Recipes of recent plans by the plan's identity (the plan is kept with its recipe, so its
# id cannot pass to another plan), and the slots of recent rules by the rule's identity:
# plans are remembered by their rule set (proxy.rules.plan), so the same few come back on
# every view. Emptied when full (a reload brings new plans and rules).
_recipes: dict[int, tuple[Plan, _Recipe]] = {}
_rule_slots: dict[int, tuple[Rule, tuple[_Slot, ...]]] = {}
RECIPES = 1024
# Requests of slots with placeholders by the slot and the rendered placeholder contents:
# visitors in the same situation get the same content, and the same request object then
# also finds the page's remembered edits (proxy.rules.compiled) without comparing ops
# field by field. Building the ops and the request anew costs ~13K instructions a slot.
_requests: OrderedDict[tuple[object, ...], rewriting.SlotRequest] = OrderedDict()
REMEMBERED_REQUESTS = 4096
MAX_REMEMBERED_TEXT = 2048   # characters of rendered content: longer ones are not kept


def _recipe(decided: Plan, remembered: bool) -> _Recipe:
    """The recipe of ``decided``; not kept unless ``remembered`` (plans made without a
    context are made afresh on every view: their recipes would only crowd out others)."""
    known = _recipes.get(id(decided))
    if known is not None and known[0] is decided:
        return known[1]
    rules = decided.applied
    recipe = _Recipe(tuple([slot for rule in rules for slot in _slots_of(rule)]),
                     frozenset([rule.id for rule in rules if rule.personal]),
                     frozenset([rule.id for rule in rules if any(
                         has_placeholders(c.content) for c in rule.changes)]))
    if remembered:
        if len(_recipes) >= RECIPES:
            _recipes.clear()
        _recipes[id(decided)] = (decided, recipe)
    return recipe


def _slots_of(rule: Rule) -> tuple[_Slot, ...]:
    known = _rule_slots.get(id(rule))
    if known is not None and known[0] is rule:
        return known[1]
    slots = []
    for selector, changes in rule.changes_by_slot:
        ops = tuple([None if has_placeholders(c.content) else _op(c, _NO_VALUES)
                     for c in changes])
        templates = tuple([c.content for c, op in zip(changes, ops, strict=True)
                           if op is None])
        request = (None if templates else
                   rewriting.SlotRequest(rule.id, selector, ops))  # type: ignore[arg-type]
        slots.append(_Slot(rule.id, selector, changes, ops, templates, request))
    if len(_rule_slots) >= RECIPES:
        _rule_slots.clear()
    _rule_slots[id(rule)] = (rule, tuple(slots))
    return tuple(slots)


_NO_VALUES = getter(None)


def _request(slot: _Slot, get: Any) -> rewriting.SlotRequest:
    """The request of a slot with placeholders for these values (remembered, see
    :data:`_requests`)."""
    texts = [render_template(template, get) for template in slot.templates]
    key = (slot, *texts)
    request = _requests.get(key)
    if request is not None:
        return request
    rendered = iter(texts)
    ops = tuple([op if op is not None else
                 Op(change.action, next(rendered), change.attribute, change.classes)
                 for change, op in zip(slot.changes, slot.ops, strict=True)])
    request = rewriting.SlotRequest(slot.key, slot.selector, ops)
    if sum([len(text) for text in texts]) <= MAX_REMEMBERED_TEXT:
        if len(_requests) >= REMEMBERED_REQUESTS:
            _requests.popitem(last=False)   # the oldest
        _requests[key] = request
    return request


def _op(change: Change, get: Any) -> Op:
    return Op(change.action, render_template(change.content, get), change.attribute,
              change.classes)


def _variant(recipe: _Recipe, changed: list[str],
             requests: Sequence[rewriting.SlotRequest]) -> str:
    """The ids of the rules that changed the page, plus, when their content has
    placeholders, a fingerprint of what was rendered (two cities must not share a
    validator). The rendered ops are at hand already; reading the placeholders' values
    again cost ~20 µs a view."""
    ids = ",".join(changed)
    placeholders = recipe.placeholders
    for rule_id in changed:
        if rule_id in placeholders:
            break
    else:
        return ids
    shown = set(changed)
    rendered = "\0".join([op.html for request in requests if request.key in shown
                          for op in request.ops])
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
