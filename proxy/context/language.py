"""Preferred languages from Accept-Language, best first.

Browsers send a short, well-formed list ("de-DE,de;q=0.9,en;q=0.8"), but the header is
client input: it is cut to 1 KB, entries that are not language tags or whose q-value is
not a number from 0 to 1 are skipped, q=0 ("not this one") and ``*`` are dropped, and at
most 10 tags are kept. Equal q-values keep the sender's order (the sort is stable). Parses
are cached because a site's visitors send few distinct headers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

MAX_HEADER_CHARS = 1024
MAX_LANGUAGES = 10
_TAG = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*")


@dataclass(frozen=True, slots=True)
class Languages:
    """Language tags, best first, normalised: "en-US", "zh-Hant-TW", "de"."""

    tags: tuple[str, ...] = ()

    @property
    def primary(self) -> str:
        """The primary language subtag of the best tag ("de" for "de-AT"); "" when none."""
        return self.tags[0].split("-", 1)[0] if self.tags else ""

    @property
    def locale(self) -> str:
        """The best tag as sent (normalised), "" when none."""
        return self.tags[0] if self.tags else ""

    @property
    def primaries(self) -> tuple[str, ...]:
        """Distinct primary subtags in order: ("de", "en") for "de-DE,de,en-US,en"."""
        return tuple(dict.fromkeys(t.split("-", 1)[0] for t in self.tags))


NO_LANGUAGES = Languages()


def parse_accept_language(header: str) -> Languages:
    """Parse an Accept-Language value (never raises)."""
    if not header:
        return NO_LANGUAGES
    return _parse(header[:MAX_HEADER_CHARS])


@lru_cache(maxsize=1024)
def _parse(header: str) -> Languages:
    weighted: list[tuple[float, str]] = []
    seen: set[str] = set()
    for item in header.split(",", 64)[:64]:
        tag, _, params = item.partition(";")
        tag = tag.strip()
        if not _TAG.fullmatch(tag):
            continue
        q = _quality(params)
        if q is None or q <= 0:
            continue
        norm = _normalise(tag)
        if norm not in seen:
            seen.add(norm)
            weighted.append((q, norm))
    weighted.sort(key=lambda pair: -pair[0])
    return Languages(tuple(tag for _, tag in weighted[:MAX_LANGUAGES]))


def _quality(params: str) -> float | None:
    """The q-value in ``;q=0.8``: 1.0 when absent, None when malformed."""
    params = params.strip()
    if not params:
        return 1.0
    name, _, value = params.partition("=")
    if name.strip().lower() != "q":
        return None
    value = value.strip()
    if not re.fullmatch(r"(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)", value):
        return None
    return float(value)


def _normalise(tag: str) -> str:
    """BCP 47 case conventions: language lower, script title, region upper."""
    parts = tag.split("-")
    out = [parts[0].lower()]
    for part in parts[1:]:
        if len(part) == 2 and part.isalpha():
            out.append(part.upper())
        elif len(part) == 4 and part.isalpha():
            out.append(part.title())
        else:
            out.append(part.lower())
    return "-".join(out)
