"""A view's bytes from the cached page's bytes: only the edits are encoded.

Encoding a whole personalised page back to bytes costs ~150 µs for 137 KB of text with
non-ASCII characters (measured with cProfile on a live worker: the largest single cost of a
cached view). The view differs from the cached page only at its edits, so its bytes are the
page's bytes with the encoded edit texts spliced in. Character offsets become byte offsets
through checkpoints taken once per cached page at the edges of every changeable region
(an edit lies inside one, so only a few bytes are measured per view). Pure.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter

Edit = tuple[int, int, str]


@dataclass(frozen=True, slots=True)
class ByteMap:
    text: str
    raw: bytes            # the page's bytes: ``bom`` bytes of byte-order mark, then the text
    bom: int
    codec: str
    chars: tuple[int, ...]   # character offsets of the checkpoints, ascending, first 0
    offsets: tuple[int, ...]   # their byte offsets in ``raw``
    one_byte_each: bool = False   # ASCII text, one byte per character: no measuring at all

    def byte_offset(self, position: int) -> int:
        if self.one_byte_each:
            return self.bom + position
        i = bisect_right(self.chars, position) - 1
        start = self.chars[i]
        return self.offsets[i] + len(self.text[start:position].encode(self.codec))

    def splice(self, edits: Sequence[Edit]) -> bytes:
        """``raw[:bom] + splice(text, edits).encode(codec, "xmlcharrefreplace")``, without
        encoding the text that did not change."""
        raw = memoryview(self.raw)   # slices of it are not copies; join copies once
        out: list[bytes | memoryview] = []
        codec = self.codec
        at = 0
        if self.one_byte_each:   # (offsets inline: two method calls an edit saved)
            bom = self.bom
            for start, end, replacement in in_order(edits):
                out.append(raw[at:bom + start])
                out.append(replacement.encode(codec, "xmlcharrefreplace"))
                at = bom + end
        else:
            for start, end, replacement in in_order(edits):
                out.append(raw[at:self.byte_offset(start)])
                out.append(replacement.encode(codec, "xmlcharrefreplace"))
                at = self.byte_offset(end)
        out.append(raw[at:])
        return b"".join(out)


_START = itemgetter(0)


def _splice_key(edit: Edit) -> tuple[int, bool]:
    return edit[0], edit[1] != edit[0]


def in_order(edits: Sequence[Edit]) -> Sequence[Edit]:
    """The edits in the order :func:`proxy.rules.edits.splice` applies them: by start, an
    insertion before a replacement at the same point, else as given. ``edits`` itself when
    already so (checked in one loop); else sorted by start alone when no two start at one
    point (a key in C: a Python key costs ~3K instructions an edit)."""
    at = -1
    replaced = False   # whether the edit before, starting at ``at``, replaces text
    for start, end, _ in edits:
        if start < at or (start == at and replaced and start == end):
            break
        at, replaced = start, end != start
    else:
        return edits
    ordered = sorted(edits, key=_START)
    at = -1
    for start, _, _ in ordered:
        if start == at:   # the insertion-first rule decides: the whole key
            return sorted(edits, key=_splice_key)
        at = start
    return ordered


def byte_map(text: str, raw: bytes, bom: int, codec: str, cuts: Iterable[int]
             ) -> ByteMap | None:
    """Checkpoints at ``cuts``; None when the text is not exactly the decoded bytes (then
    views encode the whole text, as before)."""
    chars, offsets = [0], [bom]
    for cut in sorted(set(cuts)):
        if 0 < cut <= len(text):
            offsets.append(offsets[-1] + len(text[chars[-1]:cut].encode(codec)))
            chars.append(cut)
    if offsets[-1] + len(text[chars[-1]:].encode(codec)) != len(raw):
        return None
    # Every character takes at least one byte, so ASCII text as long as its bytes takes
    # exactly one each, whatever the codec.
    one_byte_each = text.isascii() and len(raw) - bom == len(text)
    return ByteMap(text, raw, bom, codec, tuple(chars), tuple(offsets), one_byte_each)
