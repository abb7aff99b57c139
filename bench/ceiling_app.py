"""The ceiling of any Python proxy on uvicorn here: an ASGI app that answers every request
with the same 100 KB body, no work at all. Compared in bench/README.md ("Second round") with
nginx proxy_pass on the same machine.

  .venv/bin/python -m uvicorn --app-dir bench ceiling_app:app --port 18001 --loop uvloop \\
      --http httptools --log-level warning --no-access-log &
  wrk -t1 -c1 -d3s http://127.0.0.1:18001/      # and -c10

Measured 22 Nov 2026 (22:45): 2,030-3,300 req/s at concurrency 1, 10,150 at 10; nginx
proxy_pass of a 100 KB page: 1,731-3,747 at 1, 10,225-12,026 at 10 (bench/personalised.py).
"""

from __future__ import annotations

from typing import Any

BODY = (b"<p>hello world lorem ipsum</p>\n" * 3400)[:100_000]
HEADERS = [(b"content-type", b"text/html; charset=utf-8"),
           (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
