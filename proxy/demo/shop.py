"""The shop's public pages: home, catalogue, product pages, about and the newsletter.

None of these read cookies, so they are identical for every visitor and cacheable
(``public, max-age=60``); anything personal is the proxy's job, through the slots.
"""

from __future__ import annotations

import html

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from proxy.demo import catalog
from proxy.demo.render import Safe, load, page
from proxy.demo.responses import PUBLIC, html_page, money, read_form

LOW_STOCK = 10  # at or below this, pages say "only N left"


def _art(product: catalog.Product) -> Safe:
    return Safe(load(f"art/{product.art}.svg").strip())


def _badge(product: catalog.Product) -> Safe:
    if product.stock == 0:
        return Safe(' <span class="badge">Sold out</span>')
    if product.stock <= LOW_STOCK:
        return Safe(f' <span class="badge badge-low">Only {product.stock} left</span>')
    return Safe("")


def _card(product: catalog.Product) -> str:
    return page(
        "product-card.html",
        slug=product.slug,
        name=product.name,
        tagline=product.tagline,
        colour=product.colour,
        price=money(product.price),
        art=_art(product),
        badge=_badge(product),
    )


def _cards(products: tuple[catalog.Product, ...]) -> Safe:
    return Safe("".join(_card(p) for p in products))


async def home(request: Request) -> Response:
    content = page("home.html", featured=_cards(catalog.PRODUCTS[:3]))
    return html_page(
        title="Outdoor gear that lasts",
        page_id="home",
        description="Packs, shells, tents and stoves built for real weather and repaired for life.",
        content=content,
    )


async def product_list(request: Request) -> Response:
    return html_page(
        title="All gear",
        page_id="products",
        description="Every pack, shell, tent and stove Northwind Outfitters makes.",
        content=page("products.html", cards=_cards(catalog.PRODUCTS)),
    )


def _stock_line(product: catalog.Product) -> tuple[str, str]:
    if product.stock == 0:
        return "stock-out", "Out of stock. Back soon."
    if product.stock <= LOW_STOCK:
        return "stock-low", f"Only {product.stock} left in stock. Ships today."
    return "stock-ok", "In stock. Ships today."


async def product_detail(request: Request) -> Response:
    product = catalog.find(request.path_params["slug"])
    if product is None:
        raise HTTPException(404)
    stock_class, stock_text = _stock_line(product)
    if product.stock:
        button = '<button id="add-to-cart" class="button" type="submit">Add to cart</button>'
    else:
        button = '<button id="add-to-cart" class="button" type="submit" disabled>Sold out</button>'
    content = page(
        "product.html",
        slug=product.slug,
        name=product.name,
        price=money(product.price),
        tagline=product.tagline,
        description=product.description,
        colour=product.colour,
        art=_art(product),
        features=Safe("\n".join(f"          <li>{html.escape(f)}</li>" for f in product.features)),
        buy_button=Safe(button),
        stock_class=stock_class,
        stock_text=stock_text,
    )
    return html_page(
        title=product.name,
        page_id="product",
        description=product.tagline,
        content=content,
    )


async def about(request: Request) -> Response:
    return html_page(
        title="About us",
        page_id="about",
        description="Northwind Outfitters: a small team that designs, tests and repairs its gear.",
        content=page("about.html"),
    )


def _newsletter(error: str = "", status_code: int = 200) -> HTMLResponse:
    error_html = f'      <p class="form-errors" role="alert">{error}</p>' if error else ""
    return html_page(
        title="Newsletter",
        page_id="newsletter",
        description="Field notes from Northwind Outfitters, once a month.",
        content=page("newsletter.html", error=Safe(error_html)),
        status_code=status_code,
        cache=PUBLIC if status_code == 200 else "no-store",
    )


async def newsletter(request: Request) -> Response:
    if request.method == "GET":
        return _newsletter()
    form = await read_form(request)
    if "@" not in form.get("email", ""):
        return _newsletter("Please enter a valid email address.", status_code=422)
    return RedirectResponse("/newsletter/thanks", status_code=303)


async def newsletter_thanks(request: Request) -> Response:
    return html_page(
        title="Subscribed",
        page_id="newsletter-thanks",
        description="Thanks for subscribing to Field notes.",
        content=page("newsletter-thanks.html"),
    )


async def not_found(request: Request, exc: Exception) -> Response:
    """The 404 page, for unknown paths and unknown product slugs alike."""
    return html_page(
        title="Page not found",
        page_id="not-found",
        description="That page could not be found.",
        content=page("404.html"),
        status_code=404,
    )
