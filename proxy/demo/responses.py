"""Response helpers shared by the demo's page handlers.

They exist so every handler gets the same origin behaviour without repeating it: HTML is
``text/html; charset=utf-8``; pages that are the same for everyone say
``Cache-Control: public, max-age=60`` (the proxy, not the origin, personalises them), while
pages that depend on the visitor's cookies say ``private, no-store`` so no shared cache keeps
one shopper's cart for the next.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse

from proxy.demo.render import Safe, document

PUBLIC = "public, max-age=60"
PRIVATE = "private, no-store"
FORM_LIMIT = 16 * 1024  # bytes; a checkout form is a few hundred


def html_page(
    *,
    title: str,
    page_id: str,
    description: str,
    content: Safe,
    status_code: int = 200,
    cache: str = PUBLIC,
) -> HTMLResponse:
    """A whole page in the shared layout, with the given cache policy."""
    body = document(title=title, page_id=page_id, description=description, content=content)
    return HTMLResponse(body, status_code=status_code, headers={"Cache-Control": cache})


def money(dollars: int) -> str:
    """``1234`` -> ``$1,234``: prices in the demo are whole dollars."""
    return f"${dollars:,}"


async def read_form(request: Request) -> dict[str, str]:
    """The urlencoded form in the request body, first value per field.

    Parsed here rather than with ``request.form()`` because that needs python-multipart,
    a dependency the demo does not otherwise want; the body is capped at FORM_LIMIT.
    """
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > FORM_LIMIT:
            raise HTTPException(413, "Form too large")
        chunks.append(chunk)
    text = b"".join(chunks).decode("utf-8", errors="replace")
    form: dict[str, str] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        form.setdefault(key, value.strip())
    return form
