"""Cart and checkout: the pages that depend on the visitor, via cookies.

The cart lives entirely in cookies (``nw_cart`` holds ``slug:qty|slug:qty``; ``nw_cart_id`` is
an opaque id refreshed on every cart view), so the origin keeps no state and any number of
demo processes behave alike. These responses are ``private, no-store`` and set cookies, which
is exactly what a caching proxy must pass through untouched.
"""

from __future__ import annotations

import re
import secrets

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from proxy.demo import catalog
from proxy.demo.render import Safe, page
from proxy.demo.responses import PRIVATE, html_page, money, read_form

CART_COOKIE = "nw_cart"
CART_ID_COOKIE = "nw_cart_id"
ORDER_COOKIE = "nw_last_order"
CART_MAX_AGE = 30 * 24 * 3600
MAX_QTY = 9
_CART_ID = re.compile(r"[0-9a-f]{32}")
_ORDER_REF = re.compile(r"NW-[0-9]{6}")
CHECKOUT_FIELDS = ("name", "email", "address", "city", "postcode")
# Reports the order to Kairos server-side (revenue goals on event "purchase"); the proxy
# counts it for the visitor of the request and strips the header.
EVENT_HEADER = "Kairos-Event"

Cart = dict[str, int]  # slug -> quantity, insertion-ordered


def parse_cart(raw: str) -> Cart:
    """The cart in a cookie value; anything unknown or malformed is dropped, not an error."""
    cart: Cart = {}
    for item in raw.split("|"):
        slug, _, qty = item.partition(":")
        if catalog.find(slug) is not None and qty.isdigit() and int(qty) > 0:
            cart[slug] = min(int(qty), MAX_QTY)
    return cart


def format_cart(cart: Cart) -> str:
    """The cookie value for a cart (only cookie-safe characters: slugs, digits, ``:|``)."""
    return "|".join(f"{slug}:{qty}" for slug, qty in cart.items())


def _lines(cart: Cart) -> list[tuple[catalog.Product, int]]:
    return [(p, qty) for slug, qty in cart.items() if (p := catalog.find(slug)) is not None]


def _subtotal(cart: Cart) -> int:
    return sum(p.price * qty for p, qty in _lines(cart))


def _cart_message(cart: Cart) -> str:
    subtotal = _subtotal(cart)
    if not cart:
        return f"Free shipping on every order over {money(catalog.FREE_SHIPPING_OVER)}."
    if subtotal >= catalog.FREE_SHIPPING_OVER:
        return "Good news: this order ships free."
    return f"Spend {money(catalog.FREE_SHIPPING_OVER - subtotal)} more for free shipping."


def _cart_body(cart: Cart) -> Safe:
    if not cart:
        return page("cart-empty.html")
    rows = "".join(
        page("cart-row.html", slug=p.slug, name=p.name, qty=str(q), line_total=money(p.price * q))
        for p, q in _lines(cart)
    )
    return page("cart-items.html", rows=Safe(rows), subtotal=money(_subtotal(cart)))


async def cart(request: Request) -> Response:
    """GET shows the cart; POST (action=add|remove, slug, qty) changes it and redirects back."""
    items = parse_cart(request.cookies.get(CART_COOKIE, ""))
    if request.method == "POST":
        form = await read_form(request)
        _apply(items, form)
        response: Response = RedirectResponse("/cart", status_code=303)
        response.headers["Cache-Control"] = PRIVATE
        if items:
            response.set_cookie(
                CART_COOKIE, format_cart(items), max_age=CART_MAX_AGE, httponly=True, samesite="lax"
            )
        else:
            response.delete_cookie(CART_COOKIE)
    else:
        content = page("cart.html", cart_message=_cart_message(items), body=_cart_body(items))
        response = html_page(
            title="Your cart",
            page_id="cart",
            description="Your cart.",
            content=content,
            cache=PRIVATE,
        )
    cart_id = request.cookies.get(CART_ID_COOKIE, "")
    if not _CART_ID.fullmatch(cart_id):
        cart_id = secrets.token_hex(16)
    response.set_cookie(
        CART_ID_COOKIE, cart_id, max_age=CART_MAX_AGE, httponly=True, samesite="lax"
    )
    return response


def _apply(items: Cart, form: dict[str, str]) -> None:
    product = catalog.find(form.get("slug", ""))
    if product is None:
        return
    if form.get("action") == "remove":
        items.pop(product.slug, None)
    elif product.stock > 0:
        qty = int(form["qty"]) if form.get("qty", "").isdigit() else 1
        items[product.slug] = max(1, min(items.get(product.slug, 0) + qty, MAX_QTY))


def _summary(cart: Cart) -> Safe:
    if not cart:
        return Safe("        <p>Your cart is empty; you can still place a demo order.</p>")
    lines = "".join(
        f"          <li><span>{q} × {p.name}</span><span>{money(p.price * q)}</span></li>\n"
        for p, q in _lines(cart)
    )
    total = money(_subtotal(cart))
    return Safe(
        f"        <ul>\n{lines}        </ul>\n"
        f'        <p class="total"><span>Subtotal</span><span>{total}</span></p>'
    )


def _checkout_page(request: Request, form: dict[str, str], errors: list[str]) -> Response:
    cart_items = parse_cart(request.cookies.get(CART_COOKIE, ""))
    error_html = ""
    if errors:
        items = "".join(f"<li>{e}</li>" for e in errors)
        error_html = (
            f'        <div class="form-errors" role="alert">Please check your '
            f"details:<ul>{items}</ul></div>"
        )
    values = {field: form.get(field, "") for field in CHECKOUT_FIELDS}
    content = page("checkout.html", errors=Safe(error_html), summary=_summary(cart_items), **values)
    return html_page(
        title="Checkout",
        page_id="checkout",
        description="Checkout.",
        content=content,
        status_code=422 if errors else 200,
        cache=PRIVATE,
    )


async def checkout(request: Request) -> Response:
    """GET shows the form; POST validates it and redirects (303) to the confirmation."""
    if request.method == "GET":
        return _checkout_page(request, {}, [])
    form = await read_form(request)
    errors = []
    if not form.get("name"):
        errors.append("Enter your full name.")
    if "@" not in form.get("email", ""):
        errors.append("Enter an email address like you@example.com.")
    if errors:
        return _checkout_page(request, form, errors)
    response = RedirectResponse("/checkout/complete", status_code=303)
    response.headers["Cache-Control"] = PRIVATE
    total = _subtotal(parse_cart(request.cookies.get(CART_COOKIE, "")))
    if total > 0:  # an empty demo order is not revenue
        response.headers[EVENT_HEADER] = f"purchase; value={total:.2f}"
    order_ref = f"NW-{secrets.randbelow(10**6):06d}"
    response.set_cookie(
        ORDER_COOKIE, order_ref, max_age=900, path="/checkout", httponly=True, samesite="lax"
    )
    response.delete_cookie(CART_COOKIE)
    return response


async def checkout_complete(request: Request) -> Response:
    order_ref = request.cookies.get(ORDER_COOKIE, "")
    if _ORDER_REF.fullmatch(order_ref):
        order_line = f"Your order reference is {order_ref}."
    else:
        order_line = "Your order reference is in your confirmation email."
    return html_page(
        title="Order placed",
        page_id="checkout-complete",
        description="Thank you for your order.",
        content=page("complete.html", order_line=order_line),
        cache=PRIVATE,
    )
