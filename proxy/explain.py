"""``kairos explain URL ...``: the ``/_kairos/why`` derivation for a request described on the
command line, offline (no proxy, no origin, no store)."""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import urlsplit

from . import transparency
from .client_ip import ClientAddress
from .config import Config
from .visitor import Visitors


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="the page, e.g. https://shop.example/products/?utm_medium=email")
    parser.add_argument("--ua", default="", help="User-Agent")
    parser.add_argument("--ip", default="127.0.0.1", help="the visitor's IP address")
    parser.add_argument("--referer", default="", help="Referer")
    parser.add_argument("--cookie", default="", help="the whole Cookie header")
    parser.add_argument("--accept-language", default="", help="Accept-Language")
    parser.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                        help="any other request header (repeatable), e.g. 'Sec-GPC: 1'")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--config", help="TOML config file (default: ./config.toml if present)")


def scope_for(args: argparse.Namespace) -> tuple[dict[str, Any], ClientAddress]:
    url = urlsplit(args.url if "://" in args.url else "http://localhost" + args.url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"url {args.url!r} is not valid: expected http(s)://host/path")
    headers = [(b"host", url.netloc.encode()), (b"accept", b"text/html")]
    for name, value in (("user-agent", args.ua), ("referer", args.referer),
                        ("cookie", args.cookie), ("accept-language", args.accept_language)):
        if value:
            headers.append((name.encode(), value.encode("latin-1")))
    for line in args.header:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"--header {line!r} is not valid: expected 'Name: value'")
        headers.append((name.strip().lower().encode(), value.strip().encode("latin-1")))
    scope = {"type": "http", "method": "GET", "scheme": url.scheme, "path": url.path or "/",
             "query_string": url.query.encode("latin-1"), "headers": headers,
             "client": (args.ip, 0)}
    return scope, ClientAddress(ip=args.ip, peer_trusted=False, scheme=url.scheme, host=None)


def run(args: argparse.Namespace, config: Config) -> str:
    scope, client = scope_for(args)
    visitors = Visitors.open(config)
    try:
        recognition = visitors.recognise(scope, client, count_visit=False)
    finally:
        visitors.close()
    document = transparency.explain(recognition.context, None)
    if args.format == "json":
        return transparency.render_json(document).decode()
    return render_text(document)


def render_text(document: dict[str, Any]) -> str:
    page = document["page"]
    lines = [f"page      {page['host']}{page['path']}" + (f"?{page['query']}" if page["query"]
                                                         else ""),
             f"privacy   {document['privacy']['explanation']}", ""]
    width = max(len(name) for name in document["context"])
    for name, value in document["context"].items():
        if value not in (None, "", [], {}):
            lines.append(f"{name:<{width}}  {value}")
    rules = document["rules"]
    lines += ["", "rules     " + ("none loaded" if rules is None else
                                 f"{len(rules)} considered")]
    return "\n".join(lines)
