"""A cached page's view renders exactly as before (issue 7, fifth round of speed work).

The render path of a view (proxy.rules.engine, plan, placeholders, html.apply, the
personalisation transform, proxy.page.rewrite with its byte splice and gzip pieces) now
builds what it can once per plan, rule or value and remembers requests, slot results and
escaped values. Here the new code is compared with reference copies of the functions as
they were before (the full parse-and-rewrite path, the old placeholder rendering, variant,
personalisation and header fixing, the old ordering of splices) on seeded random pages,
rule sets (every action, placeholders in HTML, text and attribute values, audiences,
priorities, slots shared and overlapping), visitor values of every type (HTML
metacharacters, non-ASCII, numbers, booleans, lists, missing) and experiment arms, each
visitor twice and interleaved, so that remembered answers are used for other visitors'
views; on compiled and uncompiled pages, identity and gzip. Whole responses must be equal
byte for byte (headers too).
"""

from __future__ import annotations

import dataclasses
import gc
import gzip
import hashlib
import html as htmllib
import random
import struct
import sys
import zlib
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from proxy import codings, goals_script, page_cache
from proxy.byte_splice import byte_map, in_order
from proxy.experimentation import PageExperiments
from proxy.gzip_pieces import FINAL_EMPTY_BLOCK, GZIP_HEADER, Pieces, gzip_view, precompress
from proxy.headers import first, has_token, make_private, without
from proxy.page import PageRequest, decode_page, rewrite
from proxy.personalisation import Personalisation
from proxy.rules import engine, placeholders, scan
from proxy.rules import html as rewriting
from proxy.rules.compiled import compile_page, slots_of
from proxy.rules.edits import Edit, Op, _edit_tag, compose, splice
from proxy.rules.experiments import ARM_PRIORITY
from proxy.rules.model import (
    ACTIONS,
    CONTENT_ACTIONS,
    OUTER_ACTIONS,
    TAG_ACTIONS,
    Change,
    Pages,
    Placeholder,
    Rule,
)
from proxy.rules.plan import APPLIED, _plan, getter

from .test_rules_support import load

# --------------------------------------------------------------------------- references
# The functions as they were before this round, kept verbatim where they decide output.


def overlaps(a: Edit, b: Edit) -> bool:
    """The overlap rule, one pair at a time, as proxy.rules.edits stated it."""
    if a[0] == a[1] and b[0] == b[1]:
        return False  # two insertions at one point: both go in, in order
    if a[0] == a[1]:
        return b[0] < a[0] < b[1]
    if b[0] == b[1]:
        return a[0] < b[0] < a[1]
    return a[0] < b[1] and b[0] < a[1]


def ref_template(template: Any, get: Callable[[str], Any]) -> str:
    if len(template) == 1 and template[0].__class__ is str:
        return template[0]
    out = []
    for part in template:
        if part.__class__ is str:
            out.append(part)
            continue
        value = get(part.name)
        text = value if value.__class__ is str else ref_format(value)
        out.append(htmllib.escape(text) if text else part.default)
    return "".join(out)


def ref_format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(ref_format(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def ref_variant(rules: list[Rule], requests: Sequence[rewriting.SlotRequest]) -> str:
    ids = ",".join(r.id for r in rules)
    if not any(isinstance(part, Placeholder) for r in rules for c in r.changes
               for part in c.content):
        return ids
    shown = {r.id for r in rules}
    rendered = "\0".join(op.html for request in requests if request.key in shown
                         for op in request.ops)
    digest = hashlib.blake2s(rendered.encode(), digest_size=6).hexdigest()
    return f"{ids};{digest}"


def ref_compose(source: str, tag: Any, extent: Any, ops: tuple[Op, ...]) -> list | str:
    outer = next((op for op in ops if op.action in OUTER_ACTIONS), None)
    if outer is not None and extent is not None:
        return [(tag.start, extent.end, outer.html if outer.action == "replace" else "")]
    if extent is not None and any(op.action in CONTENT_ACTIONS for op in ops):
        if tag.name in scan.VOID:
            return f"<{tag.name}> has no content to change"
        if tag.name in scan.RAW_TEXT or (tag.name in scan.RCDATA and any(
                op.action in CONTENT_ACTIONS and op.action != "set-text" for op in ops)):
            return f"<{tag.name}> content is not HTML; only set-text works on <title>/<textarea>"
    before = "".join(op.html for op in ops if op.action == "insert-before")
    after = "".join(op.html for op in ops if op.action == "insert-after")
    prepend = "".join(op.html for op in ops if op.action == "prepend")
    append = "".join(op.html for op in ops if op.action == "append")
    content = next((op.html for op in ops if op.action in ("replace-content", "set-text")), None)
    edits: list = []
    if before:
        edits.append((tag.start, tag.start, before))
    text = source[tag.start:tag.end]
    new_tag = text
    for op in ops:
        if op.action in TAG_ACTIONS:
            new_tag = _edit_tag(new_tag, tag.name, op)
    if new_tag != text:
        edits.append((tag.start, tag.end, new_tag))
    if extent is not None:
        if content is not None:
            edits.append((tag.end, extent.content_end, prepend + content + append))
        else:
            if prepend:
                edits.append((tag.end, tag.end, prepend))
            if append:
                edits.append((extent.content_end, extent.content_end, append))
        if after:
            closing = "" if extent.has_end_tag or tag.name in scan.VOID else f"</{tag.name}>"
            edits.append((extent.end, extent.end, closing + after))
    return edits


def ref_target_edits(source: str, target: Any, ops: tuple[Op, ...]) -> list | str:
    tag = target.start_tag()
    if isinstance(tag, str):
        return tag
    extent = None
    if any(op.action not in TAG_ACTIONS for op in ops):
        found = target.extent(tag)
        if isinstance(found, str):
            return found
        extent = found
    return ref_compose(source, tag, extent, ops)


def ref_html_rewrite(source: str, requests: Sequence[rewriting.SlotRequest]
                     ) -> tuple[str | None, tuple[rewriting.SlotResult, ...], tuple]:
    """The old html.rewrite: (the new page or None, the results, the edits)."""
    select = rewriting.ParsedPage(source).targets
    accepted: list = []
    results = []
    for request in requests:
        targets = select(request.selector)
        changed = 0
        problems: list[str] = []
        for target in targets:
            edits = ref_target_edits(source, target, request.ops)
            if isinstance(edits, str):
                problems.append(edits)
            elif not edits:
                continue
            elif accepted and any(overlaps(e, o) for e in edits for o in accepted):
                problems.append(f"<{target.tag}> overlaps a change made by an earlier rule")
            else:
                accepted.extend(edits)
                changed += 1
        results.append(rewriting.SlotResult(request.key, request.selector, len(targets),
                                            changed, tuple(problems)))
    return (splice(source, accepted) if accepted else None), tuple(results), tuple(accepted)


@dataclass
class RefEdit:
    html: str
    variant: str
    personalised: bool
    splices: tuple[tuple[int, int, str], ...] | None


@dataclass
class RefRendered:
    applied: tuple[str, ...]
    decisions: list[tuple[str, str, str]]
    edit: RefEdit | None
    slots: tuple[rewriting.SlotResult, ...]


def ref_render(ruleset: Any, source: str, page: PageRequest, arms: Sequence[Rule] = ()
               ) -> RefRendered:
    """The old engine.render on the full path: a fresh plan, a parse of the page."""
    get = getter(page.context)
    decided = _plan(page.host, page.path, ruleset.candidates(page.host, page.path), get, arms)
    decisions = [(d.rule.id, d.verdict, d.reason) for d in decided.decisions]
    rules = tuple(d.rule for d in decided.decisions if d.verdict == APPLIED)
    ids = tuple(r.id for r in rules)
    if not rules or not any(engine._may_occur(s, source) for r in rules for s in r.slots):
        return RefRendered(ids, decisions, None, ())
    requests = [rewriting.SlotRequest(rule.id, selector, tuple(
        [Op(c.action, ref_template(c.content, get), c.attribute, c.classes) for c in changes]))
        for rule in rules for selector, changes in rule.changes_by_slot]
    new_html, results, edits = ref_html_rewrite(source, requests)
    if new_html is None:
        return RefRendered(ids, decisions, None, results)
    changed = list(dict.fromkeys(s.key for s in results if s.changed))
    by_id = {r.id: r for r in rules}
    edit = RefEdit(new_html, ref_variant([by_id[i] for i in changed], requests),
                   any(by_id[i].personal for i in changed), edits)
    return RefRendered(ids, decisions, edit, results)


SCRIPT_SRC, EVENT_URL = "/_kairos/goals.js", "/_kairos/event"


def ref_apply(ruleset: Any, source: str, page: PageRequest) -> RefEdit | None:
    """The old Personalisation.apply, on the reference render."""
    decided = page.experiments if isinstance(page.experiments, PageExperiments) \
        else PageExperiments()
    objected = page.context is not None and getattr(page.context, "privacy_reason",
                                                    "") == "opted_out"
    edit = None
    if not objected and not decided.holdout:
        edit = ref_render(ruleset, source, page, decided.arm_rules).edit
        if edit is not None and decided.arm_rules:
            edit = dataclasses.replace(edit, personalised=True)
    if decided.script is None:
        return edit
    variant = f"{edit.variant};goals" if edit is not None else "goals"
    splices = edit.splices if edit is not None else ()
    found = goals_script.insertion(source, SCRIPT_SRC, EVENT_URL, decided.script,
                                   decided.click_selectors)
    if found is not None and splices is not None and not any(
            start < found[0] < end for start, end, _ in splices):
        every = (*splices, (found[0], found[0], found[1]))
        return RefEdit(splice(source, list(every)), variant, True, every)
    base = edit.html if edit is not None else source
    injected = goals_script.inject(base, SCRIPT_SRC, EVENT_URL, decided.script,
                                   decided.click_selectors)
    if injected is None:
        return edit
    return RefEdit(injected, variant, True, None)


_STALE = (b"content-length", b"content-md5", b"digest", b"content-digest", b"repr-digest",
          b"content-range", b"etag")


def ref_fixed_headers(headers: list[tuple[bytes, bytes]], body: bytes, edit: RefEdit
                      ) -> list[tuple[bytes, bytes]]:
    etag = first(headers, b"etag")
    out = without(headers, *_STALE)
    out.append((b"content-length", str(len(body)).encode()))
    if etag:
        opaque = etag.removeprefix(b"W/").strip().strip(b'"')
        tag = hashlib.blake2s(edit.variant.encode(), digest_size=6).hexdigest().encode()
        out.append((b"etag", b'W/"' + opaque + b"-k" + tag + b'"'))
    if edit.personalised:
        out = make_private(out)
    if first(headers, b"content-encoding") and not has_token(out, b"vary", b"accept-encoding"):
        out.append((b"vary", b"Accept-Encoding"))
    return out


def ref_gzip_view(pieces: Pieces, edits: Sequence[tuple[int, int, str]], new_raw: bytes,
                  level: int = 5) -> bytes:
    bounds = pieces.bounds
    touched: set[int] = set()
    for start, end, _ in edits:
        last_piece = len(pieces.blobs) - 1
        first_ = min(max(0, bisect_right(bounds, start) - 1), last_piece)
        last = max(first_, bisect_right(bounds, end - 1) - 1) if end > start else first_
        touched.update(range(first_, min(last, last_piece) + 1))
    out = [GZIP_HEADER]
    k, count = 0, len(pieces.blobs)
    ordered = sorted(edits, key=lambda e: (e[0], e[1] != e[0]))
    while k < count:
        if k not in touched:
            out.append(pieces.blobs[k])
            k += 1
            continue
        run_end = k
        while run_end + 1 < count and run_end + 1 in touched:
            run_end += 1
        lo, hi = bounds[k], bounds[run_end + 1]
        parts, pos = [], lo
        for start, end, replacement in ordered:
            if start < lo or end > hi or (start == hi and end == hi and hi != len(pieces.text)):
                continue
            parts.append(pieces.text[pos:start])
            parts.append(replacement)
            pos = end
        parts.append(pieces.text[pos:hi])
        data = (pieces.bom if k == 0 else b"") + "".join(parts).encode(
            pieces.codec, errors="xmlcharrefreplace")
        compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
        out.append(compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH))
        k = run_end + 1
    out.append(FINAL_EMPTY_BLOCK)
    out.append(struct.pack("<II", zlib.crc32(new_raw), len(new_raw) & 0xFFFFFFFF))
    return b"".join(out)


def ref_rewrite(ruleset: Any, wire: bytes, headers: list[tuple[bytes, bytes]],
                page: PageRequest, decoded: Any) -> tuple[list[tuple[bytes, bytes]], bytes] | None:
    """The old proxy.page.rewrite; the view's bytes by encoding the whole new text."""
    encoding = (first(headers, b"content-encoding") or b"identity").strip().lower()
    source = decoded.html
    edit = ref_apply(ruleset, source, page)
    if edit is None:
        return None
    if edit.splices is not None:
        if all(source[s:e] == t for s, e, t in edit.splices):
            return None
    elif edit.html == source:
        return None
    new_raw = decoded.raw[:decoded.bom] + edit.html.encode(decoded.codec,
                                                           errors="xmlcharrefreplace")
    if decoded.pieces is not None and edit.splices is not None and encoding == b"gzip":
        body = ref_gzip_view(decoded.pieces, edit.splices, new_raw)
        assert gzip.decompress(body) == new_raw
    else:
        body = codings.encode(new_raw, encoding)
    return ref_fixed_headers(headers, body, edit), body


# --------------------------------------------------------------------------- generators

VALUES: tuple[Any, ...] = (
    "Berlin", "Zoë & <i>co</i>", 'say "hi" it\'s', "東京", "", None, 0, 1, 7, -3, True, False,
    1.0, 2.0, 2.5, -0.0, "1", ["a", "<b>"], ("x", 1), ("x", True), "x" * 120, "&amp;",
    "\U0001F600 smile")
NAMES = ("geo.city", "geo.country_name", "device.os", "visitor.visit_number", "time.hour",
         "source.term", "language.primary", "visitor.returning", "utm.campaign")


class Context:
    """Attribute values by name, as plan() and the placeholders read them."""

    def __init__(self, values: dict[str, Any], privacy_reason: str = "") -> None:
        self.values = values
        self.privacy_reason = privacy_reason

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)


def context(rng: random.Random) -> Context:
    values = {name: rng.choice(VALUES) for name in NAMES if rng.random() < 0.85}
    values["device.kind"] = rng.choice(["desktop", "mobile", "tablet", "bot"])
    values["geo.country"] = rng.choice(["DE", "FR", "", None])
    return Context(values, "opted_out" if rng.random() < 0.05 else "")


def some_page(rng: random.Random) -> str:
    """A page with slots #s0-#s5 (some twice, one void), classes shared between elements,
    and, on some pages, non-ASCII text (the byte splice measures then)."""
    word = rng.choice(["plain", "naïve café", "日本語", "a & b"])
    body = []
    for n in range(6):
        tag = rng.choice(["div", "p", "section", "span"])
        body.append(f'<{tag} id="s{n}" class="c{n % 3}" title="t{n}">{word} {n}'
                    f'<b class="c{(n + 1) % 3}">bold {n}</b></{tag}>\n')
        if rng.random() < 0.3:
            body.append(f'<img id="v{n}" class="c{n % 3}" alt="x">')
        if rng.random() < 0.2:
            body.append(f'<div class="outer"><p id="in{n}">inner {n}</p></div>\n')
    filler = "<p>filler text " + "lorem ipsum " * 40 + "</p>\n"
    closing = rng.choice(["</body></html>", "</BODY></html>", ""])
    return ("<!doctype html><html><head><title>t</title></head><body>\n" + filler * 3
            + "".join(body) + filler * 3 + closing)


SELECTORS = ("#s0", "#s1", "#s2", "#s3", "#s4", "#s5", ".c1", "#v1", "#in2", "p", "b.c2",
             "#nowhere")


def content(rng: random.Random, kind: str) -> str:
    """Rule content in TOML string syntax, with placeholders (or not)."""
    parts = []
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.6:
            name = rng.choice(NAMES)
            parts.append("{" + name + ("|" + rng.choice(["there", "you", "a &amp; b"])
                                       if rng.random() < 0.5 else "") + "}")
        else:
            parts.append(rng.choice([" Hello ", "<b>new</b>" if kind == "html" else "new",
                                     " Grüße ", " & "]))
    return '"' + "".join(parts).replace("\\", "\\\\").replace('"', '\\"') + '"'


def change(rng: random.Random, selector: str, taken: set[str]) -> str | None:
    action = rng.choice(["replace-content", "set-text", "insert-before", "insert-after",
                         "prepend", "append", "replace", "remove", "set-attribute",
                         "remove-attribute", "add-class", "remove-class"])
    if "outer" in taken or (action in ("replace", "remove") and taken) or (
            action in ("replace-content", "set-text") and "content" in taken):
        return None   # what the loader refuses on one element
    taken.add("outer" if action in ("replace", "remove") else
              "content" if action in ("replace-content", "set-text") else action)
    line = f'slot = "{selector}"\naction = "{action}"\n'
    if action == "set-text":
        return line + f"text = {content(rng, 'text')}\n"
    if action in ("replace-content", "insert-before", "insert-after", "prepend", "append",
                  "replace"):
        return line + f"html = {content(rng, 'html')}\n"
    if action == "set-attribute":
        return line + f'attribute = "{rng.choice(["title", "data-x"])}"\n' \
            f"value = {content(rng, 'value')}\n"
    if action == "remove-attribute":
        return line + f'attribute = "{rng.choice(["title", "alt", "data-x"])}"\n'
    if action in ("add-class", "remove-class"):
        return line + f'class = "{rng.choice(["c0", "k1", "c1 k2"])}"\n'
    return line


def rule_set(rng: random.Random) -> str:
    out = []
    for n in range(rng.randint(2, 7)):
        out.append(f'[[rule]]\nid = "r{n}"\npages = ["/*"]\npriority = {rng.randint(0, 3)}\n')
        roll = rng.random()
        if roll < 0.25:
            out.append('audience = { "device.kind" = ["mobile", "tablet"] }\n')
        elif roll < 0.4:
            out.append('audience = { "geo.country" = "DE" }\n')
        for selector in rng.sample(SELECTORS, rng.randint(1, 2)):
            taken: set[str] = set()
            for _ in range(rng.randint(1, 3)):
                made = change(rng, selector, taken)
                if made is not None:
                    out.append("\n[[rule.change]]\n" + made)
        out.append("\n")
    return "".join(out)


def arm(rng: random.Random, n: int) -> Rule:
    selector = rng.choice(SELECTORS[:6])
    template = placeholders.parse_html(
        rng.choice(["<em>arm {geo.city|x}</em>", "<em>arm</em>", "{visitor.visit_number}"]),
        "arm.html")
    return Rule(id=f"exp{n}:b", file="rules/e.toml", line=1, order=("e.toml", n),
                pages=Pages(globs=("/*",)), changes=(Change(selector, "replace-content",
                                                            template),),
                priority=ARM_PRIORITY, description="an arm")


def experiments(rng: random.Random, arms: list[Rule]) -> PageExperiments | None:
    roll = rng.random()
    if roll < 0.3:
        return None
    chosen = tuple(a for a in arms if rng.random() < 0.6)
    return PageExperiments(arm_rules=chosen, holdout=rng.random() < 0.05,
                           script=f"tok{rng.randint(0, 9)}.ab-c_d" if rng.random() < 0.7
                           else None, click_selectors=("#s0",))


def prepared(source: str, compiled: Any, coding: bytes) -> Any:
    """The page as the edge cache keeps it (proxy.page_cache's preparation)."""
    raw = source.encode()
    headers = [(b"content-type", b"text/html; charset=utf-8")]
    decoded = decode_page(raw, headers, 10**7)
    changeable = page_cache.regions(decoded.html, compiled)
    decoded = dataclasses.replace(decoded, bytes_map=byte_map(
        decoded.html, decoded.raw, decoded.bom, decoded.codec,
        [edge for region in changeable for edge in region]))
    if coding == b"gzip":
        decoded = dataclasses.replace(decoded, pieces=precompress(
            decoded.html, changeable, decoded.codec, decoded.raw[:decoded.bom]))
    return decoded


# --------------------------------------------------------------------------- the properties


def check_render(ruleset: Any, source: str, request: PageRequest, arms: Sequence[Rule]
                 ) -> None:
    new = engine.render(ruleset, source, request, arms)
    ref = ref_render(ruleset, source, request, arms)
    assert new.plan.applied == tuple(d.rule for d in new.plan.decisions
                                     if d.verdict == APPLIED)
    assert tuple(r.id for r in new.plan.applied) == ref.applied
    assert [(d.rule.id, d.verdict, d.reason) for d in new.plan.decisions] == ref.decisions
    assert new.slots == ref.slots
    if ref.edit is None:
        assert new.edit is None
        return
    assert new.edit is not None
    assert (new.edit.html, new.edit.variant, new.edit.splices) == (
        ref.edit.html, ref.edit.variant, ref.edit.splices)
    assert new.edit.personalised == (ref.edit.personalised or bool(arms))


@pytest.mark.parametrize("seed", range(24))
def test_views_equal_the_old_code_and_the_full_path(seed: int) -> None:
    rng = random.Random(seed)
    source = some_page(rng)
    text = rule_set(rng)
    ruleset, errors = load(text)
    assert errors == (), (text, errors)
    arms = [arm(rng, n) for n in range(2)]
    compiled = compile_page(source, slots_of([*ruleset.candidates("h", "/p"), *arms]))
    transform = Personalisation(_Library(ruleset), SCRIPT_SRC, EVENT_URL)
    visitors = [(context(rng), experiments(rng, arms)) for _ in range(8)]
    visitors.append((None, experiments(rng, arms)))   # no context: defaults only
    coding = rng.choice([b"gzip", b""])
    decoded = prepared(source, compiled, coding)
    headers = [(b"content-type", b"text/html; charset=utf-8"), (b"etag", b'"v1"'),
               (b"cache-control", b"public, max-age=60"), (b"content-length", b"1")]
    if coding:
        headers.append((b"content-encoding", coding))
    wire = gzip.compress(decoded.raw) if coding else decoded.raw
    for _ in range(2):   # the second round comes from what the first remembered
        for values, decided in rng.sample(visitors, len(visitors)):
            plain = PageRequest("GET", "h", "/p", "", (), values, decided)
            arms_of = decided.arm_rules if decided is not None else ()
            check_render(ruleset, source, plain, arms_of)
            cached = dataclasses.replace(plain, compiled=compiled)
            check_render(ruleset, source, cached, arms_of)
            ref = ref_rewrite(ruleset, wire, headers, cached, decoded)
            new = rewrite(wire, headers, cached, transform, 10**7, decoded)
            assert (None if new is None else (new.headers, new.body)) == ref
            full = rewrite(wire, headers, plain, transform, 10**7)   # no compiled page
            if ref is None:
                assert full is None
            else:
                assert full is not None
                assert without(full.headers, b"content-length") == without(
                    ref[0], b"content-length")
                assert codings.decode(full.body, coding or b"identity", 10**7) \
                    == codings.decode(ref[1], coding or b"identity", 10**7)


class _Library:
    def __init__(self, ruleset: Any) -> None:
        self.ruleset = ruleset


def test_remembered_answers_stay_within_their_bounds(monkeypatch: pytest.MonkeyPatch
                                                     ) -> None:
    """With tiny memories (emptied or forgetting all the time) views are still exact, and
    the memories never grow past their bounds; long rendered content is not kept."""
    monkeypatch.setattr(engine, "REMEMBERED_REQUESTS", 3)
    monkeypatch.setattr(engine, "RECIPES", 2)
    monkeypatch.setattr(engine, "MAX_REMEMBERED_TEXT", 40)
    monkeypatch.setattr(placeholders, "ESCAPED_VALUES", 2)
    monkeypatch.setattr(rewriting, "RESULTS", 2)
    engine._requests.clear()
    engine._recipes.clear()
    engine._rule_slots.clear()
    placeholders._escaped.clear()
    rewriting._results.clear()
    rng = random.Random(99)
    for _ in range(4):
        source = some_page(rng)
        ruleset, errors = load(rule_set(rng))
        assert errors == ()
        compiled = compile_page(source, slots_of(ruleset.candidates("h", "/p")))
        for _ in range(12):
            request = PageRequest("GET", "h", "/p", "", (), context(rng), compiled=compiled)
            check_render(ruleset, source, request, ())
            assert len(engine._requests) <= 3 and len(engine._recipes) <= 2
            assert len(engine._rule_slots) <= 2
            assert len(placeholders._escaped) <= 2 and len(rewriting._results) <= 3
    assert all(sum(len(text) for text in key[1:]) <= 40  # type: ignore[arg-type]
               for key in engine._requests)


def test_a_cached_pages_goals_script_place_is_found_once_and_kept_only_with_the_page(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached page is scanned for where the goals script goes on its first view that
    needs it, not again, and nothing but the page keeps the text alive (a module-wide memo
    once kept 128 evicted pages, uncounted by the cache)."""
    ruleset, errors = load('[[rule]]\nid = "r"\npages = ["/*"]\nslot = "#s0"\n'
                           'html = "<i>new</i>"\n')
    assert errors == ()
    filler = "<p>" + "lorem ipsum " * 2000 + "</p>\n"   # a 24 KB page
    source = some_page(random.Random(5)).replace("<body>\n", "<body>\n" + filler)
    references = sys.getrefcount(source)
    transform = Personalisation(_Library(ruleset), SCRIPT_SRC, EVENT_URL)
    compiled = transform.prepare(source, "h", "/p")
    place = goals_script.placement(source)
    assert place is not None
    scans = []

    def placement(page: str) -> goals_script.Place | None:
        scans.append(page)
        return place

    monkeypatch.setattr(goals_script, "placement", placement)
    decided = PageExperiments(script="tok1", click_selectors=("#s0",))
    for _ in range(3):
        edit = transform.apply(source, PageRequest("GET", "h", "/p", "", (), None, decided,
                                                   compiled))
        assert edit is not None and edit.splices is not None
        assert [at for at, _, text in edit.splices if 'data-token="tok1"' in text] == [place[0]]
    assert len(scans) == 1 and scans[0] is source
    monkeypatch.undo()
    scans.clear()
    del compiled, edit
    gc.collect()
    assert sys.getrefcount(source) == references


def test_equal_values_of_other_types_are_not_confused() -> None:
    """True, 1, 1.0 and "1" are equal keys in a dict, and ("x", 1) == ("x", True), yet each
    shows differently: one after the other on the same slot (remembered requests are found
    by what was rendered), each view is still right."""
    class Text(str):
        def __str__(self) -> str:
            return "subclass"

    ruleset, errors = load('[[rule]]\nid = "r"\npages = ["/*"]\nslot = "#s0"\n'
                           'html = "<i>{source.term|none}</i> {utm.campaign}"\n')
    assert errors == ()
    source = some_page(random.Random(1))
    compiled = compile_page(source, ["#s0"])
    values = [True, 1, 1.0, "1", ("x", 1), ("x", True), Text("1"), 0, False, 0.0, -0.0, "",
              None, [1], ["1"]]
    for _ in range(2):
        for term in values:
            for campaign in (1, True):
                request = PageRequest("GET", "h", "/p", "", (),
                                      Context({"source.term": term, "utm.campaign": campaign}),
                                      compiled=compiled)
                check_render(ruleset, source, request, ())


def test_placeholder_rendering_equals_the_old_rendering() -> None:
    class Text(str):
        pass

    templates = [placeholders.parse_html(t, "f") for t in (
        "Hi {geo.city|there}!", "{visitor.visit_number}",
        "{source.term} and {utm.campaign|x &amp; y}", "plain")]
    rng = random.Random(5)
    values = [*VALUES, Text("<sub>"), Text(""), 10**30, -0.0, float("nan"), 1e300]
    for _ in range(3):   # again: escaped values come from memory
        for template in templates:
            for _ in range(40):
                chosen = {n: rng.choice(values) for n in ("geo.city", "visitor.visit_number",
                                                          "source.term", "utm.campaign")}
                assert placeholders.render(template, chosen.get) == \
                    ref_template(template, chosen.get)


def ref_order(edits: Sequence[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    order = sorted(range(len(edits)), key=lambda i: (edits[i][0], edits[i][1] != edits[i][0],
                                                       i))
    return [edits[i] for i in order]


def test_splices_are_ordered_as_before() -> None:
    """Any edits, overlapping ones included: ties on the start, insertions among
    replacements, already ordered lists, reversed lists, empty ones."""
    rng = random.Random(3)
    for _ in range(3000):
        edits = []
        for n in range(rng.randint(0, 7)):
            start = rng.randint(0, 12)
            end = start if rng.random() < 0.4 else start + rng.randint(1, 5)
            edits.append((start, end, f"e{n}"))
        if rng.random() < 0.3:
            edits = ref_order(edits)
        assert list(in_order(edits)) == ref_order(edits)
        assert list(in_order(tuple(edits))) == ref_order(edits)


@pytest.mark.parametrize(("codec", "bom", "text"), [
    ("utf-8", b"", "<p>plain ascii</p>\n" * 300),
    ("utf-8", b"\xef\xbb\xbf", "<p>plain ascii</p>\n" * 300),
    ("utf-8", b"", "<p>naïve 日本語 \U0001F600</p>\n" * 300),
    ("windows-1252", b"", "<p>café</p>\n" * 300),
    ("utf-16-le", b"\xff\xfe", "<p>two bytes</p>\n" * 300),
])
def test_byte_splice_and_gzip_pieces_of_unordered_edits(codec: str, bom: bytes, text: str
                                                        ) -> None:
    """Edits in any order (as a view's rules make them) splice and deflate as before."""
    raw = bom + text.encode(codec)
    rng = random.Random(codec + str(len(bom)))
    for _ in range(60):
        points = sorted(rng.sample(range(len(text) + 1), 8))
        edits = [(points[i], points[i] if rng.random() < 0.3 else points[i + 1],
                  rng.choice(["", "é<b>x</b>", "€ 世界", "plain"])) for i in (0, 2, 4, 6)]
        if rng.random() < 0.5:   # an insertion where a replacement starts
            edits.append((edits[1][0], edits[1][0], "<i>at</i>"))
        rng.shuffle(edits)
        mapped = byte_map(text, raw, len(bom), codec, points)
        assert mapped is not None
        expected = bom + splice(text, list(edits)).encode(codec, errors="xmlcharrefreplace")
        assert mapped.splice(edits) == expected
        if codec != "utf-16-le":
            pieces = precompress(text, [(p, p + 10) for p in points[::2]], codec, bom)
            assert pieces is not None
            assert gzip_view(pieces, edits) == ref_gzip_view(pieces, edits,
                                                                       expected)


def test_composing_and_overlap_checks_equal_the_old_code() -> None:
    """Every element of odd pages (void, raw text, <title>, nested, undelimitable) with
    1-4 random ops of every action (and one unknown) composes as before; any two edit lists
    clash exactly when the old pairwise overlap test says so."""
    sources = ['<!doctype html><html><head><title>T</title><style>p{}</style></head><body>'
               '<div id=a class="x y">text <b>b</b></div><img id=i alt=1><textarea>t'
               '</textarea><script>1</script><p>open<p>two<svg><rect/></svg>'
               '<template><i>t</i></template></body></html>',
               "<p class=a>no doctype<br><span title='q'>s</span></p>"]
    rng = random.Random(8)
    actions = (*ACTIONS, "unknown")
    for source in sources:
        page = rewriting.ParsedPage(source)
        targets = page.targets("*")
        for _ in range(600):
            ops = tuple(Op(action, rng.choice(["", "x", "<b>y</b>", "é"]),
                           rng.choice(["", "title", "data-k", "class"]),
                           tuple(rng.sample(["x", "k", "y"], rng.randint(0, 2))))
                        for action in rng.choices(actions, k=rng.randint(1, 4)))
            target = rng.choice(targets)
            assert rewriting.target_edits(source, target, ops) == ref_target_edits(
                source, target, ops)
            tag = target.start_tag()
            if not isinstance(tag, str):   # without an extent, too (tag ops only)
                assert compose(source, tag, None, ops) == ref_compose(source, tag, None, ops)
    for _ in range(5000):
        def edits(n: int) -> list:
            out = []
            for _ in range(n):
                start = rng.randint(0, 9)
                out.append((start, start if rng.random() < 0.4 else start + rng.randint(1, 4),
                            ""))
            return out
        new, accepted = edits(rng.randint(1, 3)), edits(rng.randint(1, 4))
        assert rewriting._clashes(new, accepted) == any(
            overlaps(e, o) for e in new for o in accepted)
