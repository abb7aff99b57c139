"""The bundled demo origin: "Northwind Outfitters", a small outdoor-gear shop.

Kairos is a reverse proxy, so a demo needs something to proxy. This package is that origin:
a plain starlette site with real pages, real HTTP behaviour (cache headers, ETags, cookies,
gzip, redirects, a 404 page, JSON and a server-sent-events stream) and stable, clearly marked
personalisation slots (``id`` + ``data-slot``) that rule files can target with CSS selectors.

Start it on its own with ``python -m proxy.demo.site --host 127.0.0.1 --port 8081``; the slot
list is in :mod:`proxy.demo.site` and ``proxy/demo/README.md``.
"""
