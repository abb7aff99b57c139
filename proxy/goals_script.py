"""The goals script tag: where it goes in a page, and the bytes of the script itself.

Clicks and custom events happen in the browser, so for visitors in an experiment with such
goals Kairos adds one ``<script src>`` tag before ``</body>``. The script is served by
Kairos from the site's own origin (``/_kairos/goals.js``), which a ``script-src 'self'``
policy allows; when the page's scripts carry a CSP nonce, the tag gets the same nonce, which
a nonce-based policy requires. Its configuration travels in ``data-`` attributes, escaped,
so no inline script is needed. Pure, except for reading the script file once.
"""

from __future__ import annotations

import html as html_module
import json
import re
from functools import cache, lru_cache
from pathlib import Path

SCRIPT_FILE = Path(__file__).parent / "static" / "goals.js"
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_NONCE = re.compile(r"<script\b[^>]*?\snonce\s*=\s*[\"']?([A-Za-z0-9+/=_-]{1,200})", re.I)
MARKER = "data-kairos-goals"

Place = tuple[int, str | None]   # where the tag goes in a page, and the CSP nonce it needs


@cache
def script_bytes() -> bytes:
    return SCRIPT_FILE.read_bytes()


def tag(src: str, endpoint: str, token: str, selectors: tuple[str, ...], nonce: str | None
        ) -> str:
    before, after = _around_token(src, endpoint, selectors, nonce)
    return before + html_module.escape(token, quote=True) + after


@lru_cache(maxsize=256)
def _around_token(src: str, endpoint: str, selectors: tuple[str, ...], nonce: str | None
                  ) -> tuple[str, str]:
    """The tag before and after its token, which alone differs from view to view (the rest
    is the same for every visitor of a page: made once, not on every view)."""
    before = _attributes([("src", src), ("async", None), (MARKER, None),
                          ("data-endpoint", endpoint)])
    after = _attributes([("data-clicks", json.dumps(list(selectors))),
                         *([("nonce", nonce)] if nonce else [])])
    return f'<script{before} data-token="', f'"{after}></script>'


def _attributes(attrs: list[tuple[str, str | None]]) -> str:
    return "".join(f" {name}" if value is None
                   else f' {name}="{html_module.escape(value, quote=True)}"'
                   for name, value in attrs)


def insertion(page: str, src: str, endpoint: str, token: str, selectors: tuple[str, ...]
              ) -> tuple[int, str] | None:
    """Where the goals tag goes (before the last ``</body>``, or at the end) and the tag;
    None when the tag is already there (a page served twice through Kairos)."""
    place = placement(page)
    if place is None:
        return None
    at, nonce = place
    return at, tag(src, endpoint, token, selectors, nonce)


def placement(page: str) -> Place | None:
    """Where the tag goes in ``page`` and the nonce it needs, or None (already there).
    Scanning a 100 KB page costs ~0.3 ms, so a cached page's placement is found once and
    kept on its compiled page (proxy.personalisation)."""
    if MARKER in page:
        return None
    found = _NONCE.search(page) if "nonce" in page or "NONCE" in page else None
    return _body_end(page), found.group(1) if found else None


def _body_end(page: str) -> int:
    """Where the last ``</body>`` starts (any case, spaces before ``>``), else the end."""
    at = max(page.rfind("</body"), page.rfind("</BODY"))
    if at >= 0 and _BODY_END.match(page, at) and not _BODY_END.search(page, at + 2):
        return at
    ends = list(_BODY_END.finditer(page))   # mixed case, or a later match spelled otherwise
    return ends[-1].start() if ends else len(page)


def inject(page: str, src: str, endpoint: str, token: str, selectors: tuple[str, ...]
           ) -> str | None:
    """The page with the goals tag in (see :func:`insertion`), or None."""
    found = insertion(page, src, endpoint, token, selectors)
    if found is None:
        return None
    at, snippet = found
    return page[:at] + snippet + page[at:]
