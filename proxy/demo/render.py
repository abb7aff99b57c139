"""A deliberately tiny template renderer for the demo pages.

The pages are real HTML files in ``pages/`` so they can be read, edited and targeted with CSS
selectors without reading Python. Jinja would be overkill for a dozen placeholders and would be
one more dependency, so ``{{ name }}`` placeholders are filled here: plain ``str`` values are
HTML-escaped, :class:`Safe` values (HTML built by the site itself) are inserted as they are.
A placeholder without a value is an error, never a silent blank.
"""

from __future__ import annotations

import html
import re
from functools import cache
from pathlib import Path

PAGES_DIR = Path(__file__).parent / "pages"
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_][a-z0-9_]*)\s*\}\}")


class Safe(str):
    """A string that is already HTML and must not be escaped again."""

    __slots__ = ()


@cache
def load(name: str) -> str:
    """The text of ``pages/<name>``, read once per process."""
    return (PAGES_DIR / name).read_text(encoding="utf-8")


def fill(template: str, values: dict[str, str]) -> str:
    """Replace every ``{{ name }}`` in ``template``; a missing name raises KeyError."""

    def substitute(match: re.Match[str]) -> str:
        value = values[match.group(1)]
        return value if isinstance(value, Safe) else html.escape(value)

    return _PLACEHOLDER.sub(substitute, template)


def page(template: str, /, **values: str) -> Safe:
    """The named page fragment with its placeholders filled."""
    return Safe(fill(load(template), values))


def document(*, title: str, page_id: str, description: str, content: Safe) -> str:
    """A whole HTML document: the shared layout around one page's content."""
    return fill(
        load("layout.html"),
        {"title": title, "page_id": page_id, "description": description, "content": content},
    )
