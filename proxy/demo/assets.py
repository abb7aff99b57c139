"""Static assets (stylesheet, favicon, robots.txt) with validators, like a real origin.

Each asset is read once and served from memory with ``Cache-Control`` and an ETag derived
from its content, and ``If-None-Match`` gets a 304, so the proxy has real conditional
requests to pass through. The ETag is weak (``W/``) because GZipMiddleware compresses the
body without changing the ETag, and a strong ETag must change with the bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

STATIC_DIR = Path(__file__).parent / "static"
STATIC_MAX_AGE = 3600


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str
    cache_control: str


# URL name -> (file in static/, media type, max-age in seconds)
_ASSETS = {
    "site.css": ("site.css", "text/css; charset=utf-8", STATIC_MAX_AGE),
    "favicon.svg": ("favicon.svg", "image/svg+xml", STATIC_MAX_AGE),
    "favicon.ico": ("favicon.svg", "image/svg+xml", 86400),
    "robots.txt": ("robots.txt", "text/plain; charset=utf-8", 86400),
}


@cache
def asset(name: str) -> Asset | None:
    """The asset served under ``name``, or None if there is no such asset."""
    if name not in _ASSETS:
        return None
    filename, media_type, max_age = _ASSETS[name]
    body = (STATIC_DIR / filename).read_bytes()
    etag = 'W/"' + hashlib.sha256(body).hexdigest()[:16] + '"'
    return Asset(body, media_type, etag, f"public, max-age={max_age}")


def _matches(if_none_match: str, etag: str) -> bool:
    """Weak comparison (RFC 9110 13.1.2), which is what If-None-Match uses."""
    if if_none_match.strip() == "*":
        return True
    wanted = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == wanted for tag in if_none_match.split(","))


def serve(request: Request, name: str) -> Response:
    found = asset(name)
    if found is None:
        raise HTTPException(404)
    headers = {"ETag": found.etag, "Cache-Control": found.cache_control}
    if _matches(request.headers.get("if-none-match", ""), found.etag):
        return Response(status_code=304, headers=headers)
    return Response(found.body, media_type=found.media_type, headers=headers)


async def static_file(request: Request) -> Response:
    """``/static/<name>``: only the names listed above, never a path into the filesystem."""
    return serve(request, request.path_params["name"])


async def favicon(request: Request) -> Response:
    return serve(request, "favicon.ico")


async def robots(request: Request) -> Response:
    return serve(request, "robots.txt")
