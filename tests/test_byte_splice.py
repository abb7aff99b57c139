"""Spliced bytes equal the whole personalised text encoded, on real pages and odd codecs."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from proxy.byte_splice import byte_map
from proxy.rules.edits import splice

CORPUS = sorted(Path("/work/shared/corpus/realworld").glob("*.html"))


@pytest.mark.parametrize("path", CORPUS[::3], ids=lambda p: p.name)
def test_spliced_bytes_equal_the_encoded_view(path: Path) -> None:
    raw = path.read_bytes()
    text = raw.decode("utf-8", errors="replace")
    raw = text.encode("utf-8")
    rng = random.Random(path.name)
    cuts = sorted(rng.sample(range(len(text)), 6))
    mapped = byte_map(text, raw, 0, "utf-8", cuts)
    assert mapped is not None
    for _ in range(30):
        points = sorted(rng.sample(range(len(text) + 1), 6))
        edits = [(points[i], points[i + 1] if rng.random() < 0.7 else points[i],
                  rng.choice(["", "é<b>x</b>", "€ 世界 \U0001F600"])) for i in (0, 2, 4)]
        assert mapped.splice(edits) == splice(text, edits).encode("utf-8")


def test_a_byte_order_mark_a_single_byte_codec_and_unencodable_edits() -> None:
    text = "<p>café</p>" * 100
    raw = b"\xef\xbb\xbf" + text.encode("utf-8")
    mapped = byte_map(text, raw, 3, "utf-8", [50, 500])
    assert mapped is not None
    edits = [(0, 0, "<!--x-->"), (500, 504, "ÉTÉ")]
    assert mapped.splice(edits) == raw[:3] + splice(text, edits).encode("utf-8")
    latin = byte_map(text, text.encode("windows-1252"), 0, "windows-1252", [20])
    assert latin is not None
    edits = [(20, 25, "€ and 世界")]   # 世界 is not in windows-1252: character references
    assert latin.splice(edits) == splice(text, edits).encode("windows-1252",
                                                              errors="xmlcharrefreplace")


def test_text_that_is_not_the_bytes_is_refused() -> None:
    assert byte_map("abc", b"abcd", 0, "utf-8", [1]) is None


@pytest.mark.parametrize(("codec", "bom", "one_byte_each"), [
    ("utf-8", b"", True), ("utf-8", b"\xef\xbb\xbf", True), ("windows-1252", b"", True),
    ("utf-16-le", b"\xff\xfe", False),   # ASCII, but two bytes a character
])
def test_ascii_pages_skip_measuring_only_where_a_character_is_one_byte(
        codec: str, bom: bytes, one_byte_each: bool) -> None:
    text = "<p class=a>plain ascii</p>\n" * 400
    raw = bom + text.encode(codec)
    mapped = byte_map(text, raw, len(bom), codec, [100, 5000])
    assert mapped is not None and mapped.one_byte_each is one_byte_each
    rng = random.Random(codec)
    for _ in range(30):
        points = sorted(rng.sample(range(len(text) + 1), 4))
        edits = [(points[0], points[1], "é<b>x</b>"), (points[2], points[3], "")]
        assert mapped.splice(edits) == bom + splice(text, edits).encode(
            codec, errors="xmlcharrefreplace")
