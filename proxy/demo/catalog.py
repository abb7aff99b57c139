"""The shop's product catalogue, as plain data.

Kept apart from the routes so the pages, the stock API and the tests all read one source of
truth, and so the catalogue can change without touching any HTTP code.
"""

from __future__ import annotations

from dataclasses import dataclass

FREE_SHIPPING_OVER = 75  # dollars; quoted in the greeting and on the cart page


@dataclass(frozen=True)
class Product:
    slug: str
    name: str
    price: int  # whole dollars: the demo has no need for cents
    tagline: str
    description: str
    features: tuple[str, ...]
    art: str  # name of the inline SVG in pages/art/
    colour: str  # CSS colour behind the product art
    stock: int


PRODUCTS: tuple[Product, ...] = (
    Product(
        slug="trailhead-38-backpack",
        name="Trailhead 38 Backpack",
        price=129,
        tagline="A roomy day-and-a-half pack that carries like a daypack.",
        description=(
            "Thirty-eight litres, a ventilated back panel and a hip belt with real pockets. "
            "The Trailhead swallows a weekend's kit and still fits in an overhead locker."
        ),
        features=("38 L main compartment", "Ventilated mesh back", "1.2 kg", "Rain cover included"),
        art="backpack",
        colour="#2f6b4f",
        stock=42,
    ),
    Product(
        slug="ridgeline-shell-jacket",
        name="Ridgeline Shell Jacket",
        price=189,
        tagline="Three-layer waterproof shell for weather that changes its mind.",
        description=(
            "A fully taped, three-layer shell with pit zips and a helmet-compatible hood. "
            "Light enough to live in the bottom of your pack until the clouds roll in."
        ),
        features=("20k/20k waterproof membrane", "Pit zips", "Helmet-compatible hood", "390 g"),
        art="jacket",
        colour="#c4532a",
        stock=17,
    ),
    Product(
        slug="basecamp-2-tent",
        name="Basecamp 2 Tent",
        price=249,
        tagline="A freestanding two-person tent that pitches in four minutes.",
        description=(
            "Two doors, two vestibules and colour-coded poles, so camp goes up before the "
            "light goes down. Tested in Highland wind and Pacific rain."
        ),
        features=("Sleeps 2", "Freestanding", "2.1 kg packed", "Two doors and vestibules"),
        art="tent",
        colour="#d39b2a",
        stock=8,
    ),
    Product(
        slug="ember-camp-stove",
        name="Ember Camp Stove",
        price=59,
        tagline="Boils a litre in three minutes and folds to the size of a fist.",
        description=(
            "A canister stove with a wide burner, a piezo igniter and pot supports that "
            "hold anything from a mug to a two-litre pot."
        ),
        features=("3 min boil time", "Piezo igniter", "85 g", "Fits 100 g canisters"),
        art="stove",
        colour="#3a5a7a",
        stock=63,
    ),
    Product(
        slug="summit-trekking-poles",
        name="Summit Trekking Poles",
        price=79,
        tagline="Carbon poles that save your knees on the way down.",
        description=(
            "Three-section carbon poles with cork grips and flick locks that you can work "
            "with gloves on. Sold as a pair."
        ),
        features=("Carbon fibre", "Cork grips", "Flick locks", "Pair weighs 460 g"),
        art="poles",
        colour="#5b4a8a",
        stock=25,
    ),
    Product(
        slug="drift-sleeping-bag",
        name="Drift 20° Sleeping Bag",
        price=159,
        tagline="Responsibly sourced down, rated for a frosty night at altitude.",
        description=(
            "A mummy bag with 650-fill responsibly sourced down, a draft collar and a "
            "two-way zip. Packs down to the size of a loaf of bread."
        ),
        features=("Comfort rating -6 °C", "650-fill RDS down", "Draft collar", "980 g"),
        art="sleeping-bag",
        colour="#1f4d5c",
        stock=0,
    ),
)

_BY_SLUG = {p.slug: p for p in PRODUCTS}


def find(slug: str) -> Product | None:
    """The product with this slug, or None."""
    return _BY_SLUG.get(slug)
