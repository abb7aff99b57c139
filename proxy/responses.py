"""Kairos's own small responses (errors, admin and visitor pages): one shape for all."""

from __future__ import annotations

from email.utils import formatdate
from typing import Any

RawHeaders = list[tuple[bytes, bytes]]


def http_date() -> bytes:
    return formatdate(usegmt=True).encode()


async def respond(send: Any, status: int, content_type: bytes, body: bytes,
                  extra: RawHeaders | None = None) -> None:
    """A complete response that no cache keeps (``no-store``), with exactly one Date."""
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"date", http_date()),
        *(extra or []),
    ]})
    await send({"type": "http.response.body", "body": body})
