"""The demo origin as a starlette app: routes, middleware and a command-line entry point.

Run it alone with ``python -m proxy.demo.site --host 127.0.0.1 --port 8081`` (the proxy's
default upstream), or build it in-process with :func:`create_demo_app`.

Personalisation slots: stable ids that rule files target with CSS selectors. Each slot
element carries ``id="<name>"`` and ``data-slot="<name>"``, appears exactly once on each page
it is on, and is listed in SLOTS below and in proxy/demo/README.md (tests check all three).

    selector            element  pages                      default content
    #greeting           <p>      every page (top bar)       welcome + free-shipping line
    #promo-banner       <div>    /                          empty (hidden by CSS while empty)
    #hero-headline      <h1>     /                          "Gear that goes the long way round"
    #hero-teaser        <p>      /                          paragraph under the headline
    #cta                <a>      /                          "Shop the collection" -> /products/
    #products-intro     <p>      /products/                 intro line above the grid
    #product-teaser     <p>      /products/<slug>           the product's tagline
    #cart-message       <p>      /cart                      free-shipping progress
    #checkout-note      <p>      /checkout                  same-day dispatch note
    #order-message      <p>      /checkout/complete         "Thank you for your order! ..."
    #newsletter-pitch   <p>      /newsletter                what the newsletter offers

Every page's <body> also has ``data-page="<page id>"`` (home, products, product, cart, ...)
for rules that should apply to one kind of page only.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.routing import Route

from proxy.demo import api, assets, catalog, checkout, shop

PRODUCT_PAGES = tuple(f"/products/{p.slug}" for p in catalog.PRODUCTS)
HTML_PAGES = (
    "/",
    "/products/",
    *PRODUCT_PAGES,
    "/cart",
    "/checkout",
    "/checkout/complete",
    "/newsletter",
    "/newsletter/thanks",
    "/about",
)


@dataclass(frozen=True)
class Slot:
    name: str  # the element's id and data-slot value
    element: str  # tag name
    pages: tuple[str, ...]  # every path the slot is on

    @property
    def selector(self) -> str:
        return f"#{self.name}"


SLOTS: tuple[Slot, ...] = (
    Slot("greeting", "p", HTML_PAGES),
    Slot("promo-banner", "div", ("/",)),
    Slot("hero-headline", "h1", ("/",)),
    Slot("hero-teaser", "p", ("/",)),
    Slot("cta", "a", ("/",)),
    Slot("products-intro", "p", ("/products/",)),
    Slot("product-teaser", "p", PRODUCT_PAGES),
    Slot("cart-message", "p", ("/cart",)),
    Slot("checkout-note", "p", ("/checkout",)),
    Slot("order-message", "p", ("/checkout/complete",)),
    Slot("newsletter-pitch", "p", ("/newsletter",)),
)

GZIP_MINIMUM_SIZE = 500  # bytes; smaller responses are not worth compressing

ROUTES = [
    Route("/", shop.home),
    Route("/products/", shop.product_list),
    Route("/products/{slug}", shop.product_detail),
    Route("/about", shop.about),
    Route("/newsletter", shop.newsletter, methods=["GET", "POST"]),
    Route("/newsletter/thanks", shop.newsletter_thanks),
    Route("/cart", checkout.cart, methods=["GET", "POST"]),
    Route("/checkout", checkout.checkout, methods=["GET", "POST"]),
    Route("/checkout/complete", checkout.checkout_complete),
    Route("/static/{name}", assets.static_file),
    Route("/favicon.ico", assets.favicon),
    Route("/robots.txt", assets.robots),
    Route("/api/stock", api.stock),
    Route("/api/events", api.events),
]


def create_demo_app() -> Starlette:
    """A fresh demo origin app; it keeps no state, so any number of them behave alike."""
    return Starlette(
        routes=ROUTES,
        middleware=[Middleware(GZipMiddleware, minimum_size=GZIP_MINIMUM_SIZE)],
        exception_handlers={404: shop.not_found},
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m proxy.demo.site",
        description="Serve the Northwind Outfitters demo shop (the origin Kairos proxies).",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=8081, help="port to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn log level (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    uvicorn.run(create_demo_app(), host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
