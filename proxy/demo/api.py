"""The shop's tiny API: stock levels as JSON, and a server-sent-events stream of them.

They are here so the demo exercises more than HTML: ``/api/stock`` is a JSON response the
proxy must pass through unmodified, and ``/api/events`` trickles one event per second, which
shows whether the proxy streams (events arrive a second apart) or buffers (all at the end).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from proxy.demo import catalog

EVENT_COUNT = 5
EVENT_INTERVAL = 1.0  # seconds
MAX_EVENTS = 60
MAX_INTERVAL = 10.0


def _stock(product: catalog.Product) -> dict[str, object]:
    return {
        "slug": product.slug,
        "name": product.name,
        "stock": product.stock,
        "in_stock": product.stock > 0,
    }


async def stock(request: Request) -> Response:
    """``GET /api/stock[?slug=...]``: current stock, for every product or for one."""
    slug = request.query_params.get("slug")
    products = catalog.PRODUCTS
    if slug is not None:
        product = catalog.find(slug)
        if product is None:
            return JSONResponse({"error": f"unknown product {slug!r}"}, status_code=404)
        products = (product,)
    payload = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "items": [_stock(p) for p in products],
    }
    return JSONResponse(payload, headers={"Cache-Control": "no-cache"})


def _number(request: Request, name: str, default: float, low: float, high: float) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:  # also rejects nan
        raise ValueError(f"{name} must be a number from {low:g} to {high:g}")
    return value


async def _events(count: int, interval: float) -> AsyncIterator[str]:
    for seq in range(1, count + 1):
        if seq > 1:
            await asyncio.sleep(interval)
        product = catalog.PRODUCTS[(seq - 1) % len(catalog.PRODUCTS)]
        data = json.dumps({"seq": seq, **_stock(product)}, separators=(",", ":"))
        yield f"id: {seq}\nevent: stock\ndata: {data}\n\n"


async def events(request: Request) -> Response:
    """``GET /api/events[?count=5&interval=1]``: ``count`` SSE events, ``interval`` s apart."""
    try:
        count = int(_number(request, "count", EVENT_COUNT, 1, MAX_EVENTS))
        interval = _number(request, "interval", EVENT_INTERVAL, 0, MAX_INTERVAL)
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return StreamingResponse(
        _events(count, interval),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
