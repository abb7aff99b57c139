"""The demo origin (proxy/demo): pages, slots and the HTTP behaviour the proxy relies on.

The demo is what every end-to-end demo and benchmark proxies, and rule files target its slots
by selector, so the slot ids and the origin's headers are an interface: these tests pin them.
The app is driven in-process through httpx.ASGITransport, plus one test over a real socket.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from selectolax.lexbor import LexborHTMLParser

from proxy.demo import catalog, render
from proxy.demo.site import HTML_PAGES, PRODUCT_PAGES, SLOTS, create_demo_app, parse_args

DEMO_DIR = Path(__file__).resolve().parent.parent / "proxy" / "demo"


async def _requests(calls: list[tuple[str, str, dict[str, Any]]]) -> list[httpx.Response]:
    """Run the calls in order on one client, so cookies carry over like in a browser."""
    transport = httpx.ASGITransport(app=create_demo_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
        return [await client.request(method, path, **kw) for method, path, kw in calls]


def fetch(method: str, path: str, **kwargs: Any) -> httpx.Response:
    return asyncio.run(_requests([(method, path, kwargs)]))[0]


def fetch_all(*calls: tuple[str, str, dict[str, Any]]) -> list[httpx.Response]:
    return asyncio.run(_requests(list(calls)))


def dom(response: httpx.Response) -> LexborHTMLParser:
    return LexborHTMLParser(response.text)


# --- pages ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", HTML_PAGES)
def test_every_page_is_utf8_html(path: str) -> None:
    response = fetch("GET", path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    tree = dom(response)
    assert tree.css_first("title") is not None
    assert tree.css_first('meta[name="viewport"]') is not None
    assert tree.css_first("body").attributes.get("data-page")


@pytest.mark.parametrize("path", HTML_PAGES)
def test_pages_load_nothing_from_other_hosts_and_have_no_script(path: str) -> None:
    tree = dom(fetch("GET", path))
    assert tree.css("script") == []
    for node in tree.css("[href], [src], [action]"):
        for attr in ("href", "src", "action"):
            value = node.attributes.get(attr)
            if value is not None:
                assert value.startswith(("/", "#")), f"{attr}={value!r} on {path}"


def test_home_has_hero_cta_and_featured_products() -> None:
    tree = dom(fetch("GET", "/"))
    assert tree.css_first("#cta").attributes["href"] == "/products/"
    assert "button" in tree.css_first("#cta").attributes["class"].split()
    assert len(tree.css(".product-card")) == 3


def test_product_list_links_every_product() -> None:
    tree = dom(fetch("GET", "/products/"))
    links = {a.attributes["href"] for a in tree.css(".product-card a")}
    assert links == set(PRODUCT_PAGES)
    assert 4 <= len(links) <= 6


def test_product_page_shows_its_product_and_sold_out_state() -> None:
    tent, bag = (
        fetch("GET", f"/products/{slug}") for slug in ("basecamp-2-tent", "drift-sleeping-bag")
    )
    assert dom(tent).css_first("h1").text() == "Basecamp 2 Tent"
    assert dom(tent).css_first("#product-teaser").text() == catalog.find("basecamp-2-tent").tagline
    assert "disabled" not in dom(tent).css_first("#add-to-cart").attributes
    assert "disabled" in dom(bag).css_first("#add-to-cart").attributes


def test_public_pages_are_cacheable_and_cookie_free() -> None:
    for path in ("/", "/products/", PRODUCT_PAGES[0], "/about", "/newsletter"):
        response = fetch("GET", path)
        assert response.headers["cache-control"] == "public, max-age=60", path
        assert "set-cookie" not in response.headers, path


def test_visitor_pages_are_private() -> None:
    for path in ("/cart", "/checkout", "/checkout/complete"):
        assert fetch("GET", path).headers["cache-control"] == "private, no-store", path


def test_head_answers_like_get_without_a_body() -> None:
    response = fetch("HEAD", "/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.content == b""


def test_missing_trailing_slash_redirects() -> None:
    response = fetch("GET", "/products")
    assert response.status_code == 307
    assert response.headers["location"].endswith("/products/")


# --- slots ---------------------------------------------------------------------------------

SLOT_CASES = [(slot, path) for slot in SLOTS for path in slot.pages]


@pytest.mark.parametrize(("slot", "path"), SLOT_CASES, ids=[f"{s.name}@{p}" for s, p in SLOT_CASES])
def test_slot_exists_exactly_once(slot: Any, path: str) -> None:
    tree = dom(fetch("GET", path))
    by_id = tree.css(slot.selector)
    by_data = tree.css(f'[data-slot="{slot.name}"]')
    assert len(by_id) == 1, f"{slot.selector} on {path}"
    assert len(by_data) == 1, f"[data-slot={slot.name}] on {path}"
    assert by_id[0].tag == slot.element
    assert by_id[0].attributes["data-slot"] == slot.name


@pytest.mark.parametrize("path", HTML_PAGES)
def test_no_undocumented_slots(path: str) -> None:
    documented = {slot.name for slot in SLOTS if path in slot.pages}
    found = [node.attributes["data-slot"] for node in dom(fetch("GET", path)).css("[data-slot]")]
    assert sorted(found) == sorted(documented)
    ids = [node.attributes["id"] for node in dom(fetch("GET", path)).css("[id]")]
    assert len(ids) == len(set(ids)), f"duplicate ids on {path}"


def test_slots_are_listed_in_readme_and_site_docstring() -> None:
    import proxy.demo.site as site

    readme = (DEMO_DIR / "README.md").read_text(encoding="utf-8")
    for slot in SLOTS:
        assert f"`{slot.selector}`" in readme, slot.selector
        assert f"    {slot.selector} " in site.__doc__, slot.selector


def test_promo_banner_is_empty_by_default() -> None:
    banner = dom(fetch("GET", "/")).css_first("#promo-banner")
    assert banner.html.endswith("></div>")
    assert banner.text(strip=True) == ""


def test_order_message_thanks_the_customer() -> None:
    message = dom(fetch("GET", "/checkout/complete")).css_first("#order-message").text()
    assert "thank you for your order" in message.lower()


# --- cart and checkout ---------------------------------------------------------------------


def test_cart_sets_a_cart_id_cookie() -> None:
    response = fetch("GET", "/cart")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("nw_cart_id=")
    assert "HttpOnly" in cookie


def test_cart_add_and_remove() -> None:
    slug = "ember-camp-stove"
    add, cart, remove, empty = fetch_all(
        ("POST", "/cart", {"data": {"action": "add", "slug": slug, "qty": "2"}}),
        ("GET", "/cart", {}),
        ("POST", "/cart", {"data": {"action": "remove", "slug": slug}}),
        ("GET", "/cart", {}),
    )
    assert add.status_code == 303
    assert add.headers["location"] == "/cart"
    assert "Ember Camp Stove" in cart.text
    assert "$118" in cart.text
    assert "Good news" in dom(cart).css_first("#cart-message").text()
    assert remove.status_code == 303
    assert "Your cart is empty" in empty.text


def test_cart_ignores_a_forged_cookie() -> None:
    (response,) = fetch_all(("GET", "/cart", {"headers": {"cookie": "nw_cart=<b>x</b>:9|zz:1"}}))
    assert response.status_code == 200
    assert "Your cart is empty" in response.text


def test_checkout_post_redirects_to_complete() -> None:
    form = {"name": "Ada Lovelace", "email": "ada@example.com", "city": "London"}
    post, complete = fetch_all(
        ("POST", "/checkout", {"data": form}),
        ("GET", "/checkout/complete", {}),
    )
    assert post.status_code == 303
    assert post.headers["location"] == "/checkout/complete"
    assert "nw_last_order=NW-" in post.headers["set-cookie"]
    assert complete.status_code == 200
    assert "Your order reference is NW-" in complete.text


def test_a_placed_order_reports_its_total_to_kairos_in_a_header() -> None:
    form = {"name": "Ada Lovelace", "email": "ada@example.com"}
    _, order, _, empty_order = fetch_all(
        ("POST", "/cart", {"data": {"action": "add", "slug": "ember-camp-stove", "qty": "2"}}),
        ("POST", "/checkout", {"data": form}),     # 2 x $59
        ("GET", "/cart", {}),                      # the order emptied the cart
        ("POST", "/checkout", {"data": form}),     # a demo order with an empty cart
    )
    assert order.status_code == 303
    assert order.headers.get_list("kairos-event") == ["purchase; value=118.00"]
    assert empty_order.status_code == 303
    assert "kairos-event" not in empty_order.headers   # nothing bought: no revenue
    invalid = fetch("POST", "/checkout", data={"name": "Ada", "email": "nope"})
    assert "kairos-event" not in invalid.headers


def test_checkout_rejects_an_incomplete_form_and_keeps_the_input() -> None:
    response = fetch("POST", "/checkout", data={"name": "<Ada>", "email": "nope"})
    assert response.status_code == 422
    tree = dom(response)
    assert tree.css_first(".form-errors") is not None
    assert tree.css_first("#name").attributes["value"] == "<Ada>"  # escaped, round-trips
    assert "<Ada>" not in response.text


def test_oversized_form_is_refused() -> None:
    response = fetch("POST", "/checkout", data={"name": "x" * 20_000, "email": "a@b.c"})
    assert response.status_code == 413


def test_newsletter_signup() -> None:
    ok = fetch("POST", "/newsletter", data={"email": "ada@example.com"})
    assert ok.status_code == 303
    assert ok.headers["location"] == "/newsletter/thanks"
    assert fetch("POST", "/newsletter", data={"email": "nope"}).status_code == 422


# --- other origin behaviour ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nope", "/products/no-such-thing", "/static/nope.css"])
def test_unknown_paths_get_the_404_page(path: str) -> None:
    response = fetch("GET", path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "Off the map" in response.text


def test_gzip_when_asked_for() -> None:
    zipped = fetch("GET", "/", headers={"accept-encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert "accept-encoding" in zipped.headers["vary"].lower()
    assert "hero-headline" in zipped.text  # httpx decoded it
    plain = fetch("GET", "/", headers={"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers
    small = fetch("GET", "/robots.txt", headers={"accept-encoding": "gzip"})
    assert "content-encoding" not in small.headers


def test_gzip_body_really_is_gzip() -> None:
    async def raw() -> bytes:
        transport = httpx.ASGITransport(app=create_demo_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
            request = client.build_request("GET", "/", headers={"accept-encoding": "gzip"})
            response = await client.send(request, stream=True)
            body = b"".join([chunk async for chunk in response.aiter_raw()])
            await response.aclose()
            return body

    assert b"hero-headline" in gzip.decompress(asyncio.run(raw()))


def test_stylesheet_is_cacheable_with_an_etag() -> None:
    response = fetch("GET", "/static/site.css")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/css; charset=utf-8"
    assert response.headers["cache-control"] == "public, max-age=3600"
    etag = response.headers["etag"]
    again = fetch("GET", "/static/site.css", headers={"if-none-match": etag})
    assert again.status_code == 304
    assert again.headers["etag"] == etag
    assert again.content == b""
    other = fetch("GET", "/static/site.css", headers={"if-none-match": 'W/"other"'})
    assert other.status_code == 200


def test_favicon_and_robots() -> None:
    icon = fetch("GET", "/favicon.ico")
    assert icon.status_code == 200
    assert icon.headers["content-type"] == "image/svg+xml"
    assert icon.text.startswith("<svg")
    robots = fetch("GET", "/robots.txt")
    assert robots.headers["content-type"] == "text/plain; charset=utf-8"
    assert "Disallow: /checkout" in robots.text


def test_stock_api() -> None:
    response = fetch("GET", "/api/stock")
    assert response.headers["content-type"] == "application/json"
    items = response.json()["items"]
    assert [item["slug"] for item in items] == [p.slug for p in catalog.PRODUCTS]
    one = fetch("GET", "/api/stock", params={"slug": "basecamp-2-tent"}).json()["items"]
    assert one == [
        {"slug": "basecamp-2-tent", "name": "Basecamp 2 Tent", "stock": 8, "in_stock": True}
    ]
    assert fetch("GET", "/api/stock", params={"slug": "nope"}).status_code == 404


def test_event_stream_sends_five_events() -> None:
    response = fetch(
        "GET", "/api/events", params={"interval": "0"}, headers={"accept-encoding": "gzip"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "content-encoding" not in response.headers  # never buffered by compression
    data = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert [json.loads(d)["seq"] for d in data] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("query", ["count=0", "count=x", "interval=-1", "interval=nan"])
def test_event_stream_rejects_bad_parameters(query: str) -> None:
    assert fetch("GET", f"/api/events?{query}").status_code == 400


# --- pieces --------------------------------------------------------------------------------


def test_render_escapes_text_but_not_safe_html() -> None:
    template = "<p>{{ text }}</p>{{ html }}"
    filled = render.fill(template, {"text": "<b>&", "html": render.Safe("<i>ok</i>")})
    assert filled == "<p>&lt;b&gt;&amp;</p><i>ok</i>"
    with pytest.raises(KeyError):
        render.fill("{{ missing }}", {})


def test_command_line_defaults() -> None:
    args = parse_args([])
    assert (args.host, args.port) == ("127.0.0.1", 8081)
    assert parse_args(["--port", "9000"]).port == 9000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serves_over_a_real_socket_and_streams_events() -> None:
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "proxy.demo.site",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    server = subprocess.Popen(command, cwd=DEMO_DIR.parent.parent)
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=5) as client:
            deadline = time.monotonic() + 15
            while True:
                try:
                    home = client.get("/")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "demo site did not start"
                    assert server.poll() is None, "demo site exited"
                    time.sleep(0.1)
            assert home.status_code == 200
            assert "hero-headline" in home.text
            arrivals = []
            params = {"count": "3", "interval": "0.3"}
            with client.stream("GET", "/api/events", params=params) as stream:
                for line in stream.iter_lines():
                    if line.startswith("data: "):
                        arrivals.append(time.monotonic())
            assert len(arrivals) == 3
            assert arrivals[-1] - arrivals[0] >= 0.45  # arrived as sent, not all at the end
    finally:
        server.terminate()
        server.wait(timeout=10)
