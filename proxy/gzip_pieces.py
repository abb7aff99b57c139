"""Gzip for personalised views of a cached page, compressing only what changed.

Re-compressing a 100-150 KB page on every view costs 2-3 ms of CPU (gzip level 5), more
than everything else a cached, compiled view costs together. But a view differs from the
cached page only inside a few slots. So, once per cached page, the text is cut into pieces
at the boundaries of every element a rule or arm may change, and each piece is deflated
alone, ending with a full flush (``Z_FULL_FLUSH``: byte-aligned, and the next piece does not
refer back to it). A deflate stream may be any sequence of such blocks, so a view is: the
gzip header, the stored blocks of every untouched piece, freshly deflated blocks for the
pieces its edits touch, an empty final block, and the CRC-32 and length of the whole view.

Cost per view: deflating the touched pieces (a few KB), encoding the page text to bytes and
its CRC-32 (~50 µs for 100 KB). Price: pieces compress independently, so the page is a few
percent larger than one deflate run over it (pieces are kept >= ``MIN_PIECE`` characters).
The output decompresses to exactly the bytes a full re-encode would carry
(tests/test_gzip_pieces.py checks it on the real-world corpus with random edits); only the
compressed bytes differ. Pure.
"""

from __future__ import annotations

import struct
import zlib
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"   # deflate, no name, no mtime
FINAL_EMPTY_BLOCK = b"\x03\x00"   # BFINAL, fixed Huffman, end of block
MIN_PIECE = 8192   # smaller pieces recompress less per view but cost more bytes
LEVEL = 5   # as proxy.codings re-encodes
# Codecs whose encoding of a string is the concatenation of the encodings of its parts.
_STATELESS = ("utf-8", "utf_8", "ascii", "latin-1", "latin_1", "iso8859", "iso-8859",
              "cp12", "windows-12", "koi8", "mac-roman", "mac_roman")

Edit = tuple[int, int, str]


@dataclass(frozen=True, slots=True)
class Pieces:
    """A page text cut at ``bounds`` (character offsets, first 0, last len(text)); piece k
    is ``text[bounds[k]:bounds[k + 1]]`` and ``blobs[k]`` its deflated bytes (the byte order
    mark, if any, belongs to piece 0)."""

    text: str
    codec: str
    bom: bytes
    bounds: tuple[int, ...]
    blobs: tuple[bytes, ...]


def stateless(codec: str) -> bool:
    name = codec.lower()
    return name.startswith(_STATELESS)


def precompress(text: str, cuts: Iterable[int], codec: str, bom: bytes = b"",
                level: int = LEVEL) -> Pieces | None:
    """Deflate ``text`` piece by piece, cut near ``cuts`` (pieces of at least MIN_PIECE
    characters, so cuts closer together merge). None for a codec that cannot be cut."""
    if not stateless(codec):
        return None
    bounds = [0]
    for cut in sorted(set(cuts)):
        if cut - bounds[-1] >= MIN_PIECE and len(text) - cut >= MIN_PIECE // 2:
            bounds.append(cut)
    bounds.append(len(text))
    blobs = tuple(_deflate((bom if k == 0 else b"") + text[bounds[k]:bounds[k + 1]].encode(
        codec), level) for k in range(len(bounds) - 1))
    return Pieces(text, codec, bom, tuple(bounds), blobs)


def gzip_view(pieces: Pieces, edits: Sequence[Edit], new_raw: bytes,
              level: int = LEVEL) -> bytes:
    """The gzip body of ``pieces.text`` with ``edits`` applied, whose bytes (BOM included)
    are ``new_raw`` (the caller has them already; only their CRC and length are taken)."""
    bounds = pieces.bounds
    touched: set[int] = set()
    for start, end, _ in edits:
        last_piece = len(pieces.blobs) - 1
        first = min(max(0, bisect_right(bounds, start) - 1), last_piece)
        last = max(first, bisect_right(bounds, end - 1) - 1) if end > start else first
        touched.update(range(first, min(last, last_piece) + 1))
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
        text = _splice(pieces.text, lo, hi, ordered)
        data = (pieces.bom if k == 0 else b"") + text.encode(pieces.codec,
                                                             errors="xmlcharrefreplace")
        out.append(_deflate(data, level))
        k = run_end + 1
    out.append(FINAL_EMPTY_BLOCK)
    out.append(struct.pack("<II", zlib.crc32(new_raw), len(new_raw) & 0xFFFFFFFF))
    return b"".join(out)


def _splice(text: str, lo: int, hi: int, edits: Sequence[Edit]) -> str:
    """``text[lo:hi]`` with the edits that fall inside it applied (edits are sorted, do not
    overlap, and each lies inside one run of touched pieces)."""
    out, pos = [], lo
    for start, end, replacement in edits:
        if start < lo or end > hi or (start == hi and end == hi and hi != len(text)):
            continue
        out.append(text[pos:start])
        out.append(replacement)
        pos = end
    out.append(text[pos:hi])
    return "".join(out)


def _deflate(data: bytes, level: int) -> bytes:
    compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH)
