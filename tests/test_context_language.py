"""Accept-Language parsing: q-values, order, bounds and garbage."""

from __future__ import annotations

import pytest

from proxy.context.language import Languages, parse_accept_language

CASES = [
    ("", (), ""),
    ("de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7", ("de-DE", "de", "en-US", "en"), "de"),
    ("en-US,en;q=0.9", ("en-US", "en"), "en"),
    ("fr-CH, fr;q=0.9, en;q=0.8, de;q=0.7, *;q=0.5", ("fr-CH", "fr", "en", "de"), "fr"),
    # sorted by q, stable for equal q
    ("en;q=0.5,de;q=0.9,fr", ("fr", "de", "en"), "fr"),
    ("nl,de,en", ("nl", "de", "en"), "nl"),
    ("da, en-gb;q=0.8, en;q=0.7", ("da", "en-GB", "en"), "da"),
    # case normalisation: language lower, script title, region upper
    ("ZH-hant-tw,zh;q=0.8", ("zh-Hant-TW", "zh"), "zh"),
    ("es-419,es;q=0.9", ("es-419", "es"), "es"),
    # q=0 means "not this", out-of-range and malformed q-values are skipped
    ("de;q=0,en", ("en",), "en"),
    ("de;q=1.5,en;q=0.5", ("en",), "en"),
    ("de;q=abc,en;q=0.5", ("en",), "en"),
    ("de;level=1,en", ("en",), "en"),
    ("de;q=1.000,en;q=0.999", ("de", "en"), "de"),
    ("de; q=0.8 ,en ;q=0.9", ("en", "de"), "en"),
    # duplicates keep the first (best) occurrence
    ("en,en;q=0.5,EN", ("en",), "en"),
    # garbage
    ("*", (), ""),
    (";;;,,,", (), ""),
    ("<script>alert(1)</script>", (), ""),
    ("en_US,de", ("de",), "de"),
    ("toolonglanguage,de", ("de",), "de"),
    ("\x00\x01,fr", ("fr",), "fr"),
]


@pytest.mark.parametrize(("header", "tags", "primary"), CASES)
def test_parse(header: str, tags: tuple[str, ...], primary: str) -> None:
    found = parse_accept_language(header)
    assert found.tags == tags
    assert found.primary == primary


def test_at_most_ten() -> None:
    header = ",".join(f"l{chr(97 + i // 26)}{chr(97 + i % 26)};q=0.{90 - i:02d}"
                      for i in range(40))
    found = parse_accept_language(header)
    assert len(found.tags) == 10
    assert found.tags[0] == "laa"


def test_huge_header_is_cut_not_parsed_whole() -> None:
    found = parse_accept_language("de," + "x" * 100_000 + ",en")
    assert found.tags == ("de",)


def test_locale_and_primaries() -> None:
    found = parse_accept_language("de-AT,de;q=0.9,en-GB;q=0.8,en;q=0.7")
    assert found.locale == "de-AT"
    assert found.primaries == ("de", "en")
    assert Languages().locale == "" and Languages().primaries == ()
