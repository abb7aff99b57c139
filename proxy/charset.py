"""Which character encoding an HTML page is in (F7), in the order browsers use.

``Content-Type`` charset, then a byte-order mark, then ``<meta charset>`` / ``http-equiv``
in the first 1024 bytes, then the fallback. The HTML parser is never left to guess: handed
raw windows-1252 bytes, selectolax turns every accented letter into U+FFFD. A page that
does not decode strictly in the detected charset is passed through untouched.
"""

from __future__ import annotations

import codecs
import re

FALLBACK = "cp1252"  # windows-1252, the WHATWG default for legacy pages without a declaration

_CT_CHARSET = re.compile(rb"charset\s*=\s*[\"']?([A-Za-z0-9._:\-]+)", re.I)
_META = re.compile(
    rb"<meta[^>]+?charset\s*=\s*[\"']?\s*([A-Za-z0-9._:\-]+)", re.I
)
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
         (codecs.BOM_UTF16_BE, "utf-16-be"))
# WHATWG: these labels mean windows-1252 in browsers.
_ALIASES = {"iso-8859-1": "windows-1252", "latin1": "windows-1252", "ascii": "windows-1252",
            "us-ascii": "windows-1252", "iso8859-1": "windows-1252"}


def detect(content_type: bytes | None, body: bytes) -> tuple[str, int]:
    """(Python codec name, length of BOM to skip)."""
    if content_type:
        match = _CT_CHARSET.search(content_type)
        if match and (name := _codec(match.group(1))):
            bom = _bom(body)
            return name, (bom[1] if bom and bom[0] == name else 0)
    if bom := _bom(body):
        return bom
    match = _META.search(body[:1024])
    if match and (name := _codec(match.group(1))):
        # A page that says utf-16 in a meta tag is ASCII-compatible bytes: browsers use utf-8.
        return ("utf-8" if name.startswith("utf-16") else name), 0
    return FALLBACK, 0


def _bom(body: bytes) -> tuple[str, int] | None:
    for bom, name in _BOMS:
        if body.startswith(bom):
            return name, len(bom)
    return None


def _codec(label: bytes) -> str | None:
    text = label.decode("ascii", "ignore").strip().lower()
    text = _ALIASES.get(text, text)
    try:
        return codecs.lookup(text).name
    except LookupError:
        return None
