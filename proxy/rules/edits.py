"""Turning actions on one located element into splices, and applying splices.

Pure string work on the page source: :mod:`proxy.rules.html` has already found the
element's start tag and extent; here the actions become ``(start, end, text)`` edits that
touch nothing outside that element, and the page is put back together from them.
"""

from __future__ import annotations

import html as htmllib
from dataclasses import dataclass

from proxy.rules import scan
from proxy.rules.extent import Extent
from proxy.rules.model import CONTENT_ACTIONS, OUTER_ACTIONS, TAG_ACTIONS
from proxy.values import quick_init


@quick_init
@dataclass(frozen=True, slots=True)
class Op:
    """One action, its content already rendered (HTML ready to insert, attribute values
    already escaped)."""

    action: str
    html: str = ""
    attribute: str = ""
    classes: tuple[str, ...] = ()


Edit = tuple[int, int, str]  # replace source[start:end] with text


def splice(source: str, edits: list[Edit]) -> str:
    order = sorted(range(len(edits)), key=lambda i: (edits[i][0], edits[i][1] != edits[i][0], i))
    out: list[str] = []
    pos = 0
    for i in order:
        start, end, text = edits[i]
        out.append(source[pos:start])
        out.append(text)
        pos = end
    out.append(source[pos:])
    return "".join(out)


def compose(source: str, tag: scan.StartTag, extent: Extent | None,
               ops: tuple[Op, ...]) -> list[Edit] | str:
    """Compose one rule's ops on one element into non-overlapping splices."""
    # One pass sorts the ops by what they touch (each kind's texts joined in op order):
    # an element's edits are composed whenever a view brings new content.
    outer = None
    content = None   # the first replace-content / set-text
    before = after = prepend = append = ""
    inner = markup = retag = False   # content ops; ones other than set-text; tag ops
    for op in ops:
        action = op.action
        if action in TAG_ACTIONS:
            retag = True
        elif action in CONTENT_ACTIONS:
            inner = True
            if action == "prepend":
                prepend += op.html
            elif action == "append":
                append += op.html
            elif content is None:
                content = op.html
            if action != "set-text":
                markup = True
        elif action == "insert-before":
            before += op.html
        elif action == "insert-after":
            after += op.html
        elif action in OUTER_ACTIONS and outer is None:
            outer = op
    if outer is not None and extent is not None:
        return [(tag.start, extent.end, outer.html if outer.action == "replace" else "")]
    if extent is not None and inner:
        if tag.name in scan.VOID:
            return f"<{tag.name}> has no content to change"
        if tag.name in scan.RAW_TEXT or (tag.name in scan.RCDATA and markup):
            return f"<{tag.name}> content is not HTML; only set-text works on <title>/<textarea>"
    edits: list[Edit] = []
    if before:
        edits.append((tag.start, tag.start, before))
    if retag:
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


def _edit_tag(text: str, name: str, op: Op) -> str:
    """One attribute or class change on the source text of a start tag."""
    attrs, _ = scan.parse_attrs(text, 1 + len(name))
    target = "class" if op.action.endswith("-class") else op.attribute
    current = next((a for a in attrs if a.name == target), None)
    if op.action == "remove-attribute":
        if current is None:
            return text
        start = current.start
        while start > 0 and text[start - 1] in " \t\n\r\f":
            start -= 1
        return text[:start] + text[current.end:]
    if op.action == "set-attribute":
        value = op.html
    else:
        classes = htmllib.unescape(current.value or "").split() if current else []
        if op.action == "add-class":
            classes += [c for c in op.classes if c not in classes]
        else:
            classes = [c for c in classes if c not in op.classes]
        value = htmllib.escape(" ".join(classes))
    written = f'{target}="{value}"'
    if current is None:  # appended, as the DOM's setAttribute does
        cut = attrs[-1].end if attrs else 1 + len(name)
        return text[:cut] + " " + written + text[cut:]
    return text[:current.start] + written + text[current.end:]
