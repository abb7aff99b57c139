"""Gzip assembled from stored and fresh pieces decompresses to exactly the personalised page."""

from __future__ import annotations

import gzip
import random
import struct
import zlib
from pathlib import Path

import pytest

from proxy.gzip_pieces import gzip_view, precompress, shifted, stateless
from proxy.rules.edits import splice

CORPUS = sorted(Path("/work/shared/corpus/realworld").glob("*.html"))


def random_edits(rng: random.Random, text: str, bounds: tuple[int, ...]) -> list:
    """Non-overlapping edits anywhere, including on piece boundaries and the very end."""
    points = sorted(rng.sample(range(len(text) + 1), k=min(len(text) + 1, 2 * rng.randint(1, 6))))
    points += [rng.choice(bounds)] * rng.randint(0, 2) + [len(text)] * rng.randint(0, 1)
    points = sorted(points)
    edits, pos = [], 0
    for i in range(0, len(points) - 1, 2):
        start, end = points[i], points[i + 1]
        if start < pos:
            continue
        if rng.random() < 0.3:
            end = start   # an insertion
        edits.append((start, end, rng.choice(["", "<b>é</b>", "x" * 50, "Hello 世界"])))
        pos = end
    return edits


@pytest.mark.parametrize("path", CORPUS[:20], ids=lambda p: p.name)
def test_views_decompress_to_exactly_the_spliced_page(path: Path) -> None:
    text = path.read_bytes().decode("utf-8", errors="replace")
    rng = random.Random(path.name)
    starts = rng.sample(range(len(text)), k=min(len(text), 3))   # ~3 slots
    pieces = precompress(text, [(s, s + rng.randint(0, 3000)) for s in starts], "utf-8")
    assert pieces is not None and pieces.bounds[0] == 0 and pieces.bounds[-1] == len(text)
    for _ in range(25):
        edits = random_edits(rng, text, pieces.bounds)
        new_raw = splice(text, edits).encode("utf-8")
        assert gzip.decompress(gzip_view(pieces, edits)) == new_raw
    plain = zlib.compressobj(5, zlib.DEFLATED, 31)
    whole = len(plain.compress(text.encode()) + plain.flush())
    if len(text) > 100_000:   # independent pieces cost a few percent on large pages
        assert len(gzip_view(pieces, [])) < whole * 1.15


@pytest.mark.parametrize("length", [0, 1, 3, 255, 4096, 70_001])
def test_a_pieces_crc_map_is_what_zlib_does_to_any_crc_before_its_bytes(length: int) -> None:
    """The view's CRC is built from each untouched piece's CRC and map (crc32_combine); the
    map must be zlib's for every starting CRC, and depend on the length alone."""
    rng = random.Random(length)
    text = "".join(rng.choice("ab<é>\n") for _ in range(length))
    pieces = precompress(text, [], "utf-8")
    assert pieces is not None and len(pieces.blobs) == 1
    data = text.encode()
    assert (pieces.crcs[0], pieces.sizes[0]) == (zlib.crc32(data), len(data))
    other = rng.randbytes(len(data))
    for crc in [0, 1, 0xFFFFFFFF, 0x80000000, *(rng.getrandbits(32) for _ in range(50))]:
        expected = zlib.crc32(data, crc)
        assert shifted(pieces.shifts[0], crc) ^ pieces.crcs[0] == expected
        assert shifted(pieces.shifts[0], crc) ^ zlib.crc32(other) == zlib.crc32(other, crc)


def test_the_trailer_is_the_crc_and_length_of_the_whole_view() -> None:
    text = ("<p>caf\u00e9 " + "x" * 5000 + "</p>") * 30
    rng = random.Random(7)
    pieces = precompress(text, [(s, s + 40) for s in (100, 40_000, 90_000, len(text) - 5)],
                         "utf-8")
    assert pieces is not None and len(pieces.blobs) > 4
    for _ in range(40):
        edits = random_edits(rng, text, pieces.bounds)
        new_raw = splice(text, edits).encode("utf-8")
        body = gzip_view(pieces, edits)
        assert body[-8:] == struct.pack("<II", zlib.crc32(new_raw), len(new_raw))


def test_a_byte_order_mark_and_a_single_byte_codec() -> None:
    text = "<p>café</p>" * 2000
    bom = b"\xef\xbb\xbf"
    pieces = precompress(text, [(5000, 5100), (10000, 10004)], "utf-8", bom)
    assert pieces is not None
    edits = [(0, 0, "<!-- first -->"), (10000, 10004, "ÉTÉ")]
    new_raw = bom + splice(text, edits).encode("utf-8")
    assert gzip.decompress(gzip_view(pieces, edits)) == new_raw
    latin = precompress(text, [(7000, 7003)], "windows-1252")
    assert latin is not None
    new = splice(text, [(7000, 7003, "€")]).encode("windows-1252")
    assert gzip.decompress(gzip_view(latin, [(7000, 7003, "€")])) == new


def test_codecs_that_cannot_be_cut_are_refused() -> None:
    assert precompress("<p>x</p>", [(3, 4)], "utf-16") is None
    assert not stateless("utf-16-le") and stateless("utf-8") and stateless("windows-1252")
