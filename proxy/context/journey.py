"""Journey stages and interest categories, both derived from the request path.

Stages are ordered (awareness → consideration → purchase → customer by default); a page
belongs to the *furthest* stage whose pattern it matches, so ``/checkout/complete`` is
"customer" even though ``/checkout*`` ("purchase") matches it too. The visitor state keeps
the furthest stage ever reached, because "has been to checkout" is what personalisation
asks, not "is on a checkout page now".

Interest counts are bounded with the Space-Saving rule: when all slots are taken, a new
category replaces the least-counted one and inherits its count plus one. That keeps the
cookie small while still letting a new, repeated interest rise to the top.
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import suppress
from dataclasses import dataclass

from proxy.context.settings import ContextSettings
from proxy.values import quick_init

Counts = tuple[tuple[str, int], ...]  # (category, count), highest count first
MAX_COUNT = 65_535  # fits the cookie's 16-bit field
PAGE_CACHE_SIZE = 4096
MAX_CACHED_PATH_CHARS = 256  # longer paths are matched every time: bounds the cache's memory


@quick_init
@dataclass(frozen=True, slots=True)
class Journey:
    """Where this page and this visitor are in the journey, and what they are into.

    ``stage`` and ``current_interests`` describe this request only; ``furthest`` and
    ``interests`` are history and are empty when profiling is not allowed.
    """

    stage: str = ""
    furthest: str = ""
    current_interests: tuple[str, ...] = ()
    interests: Counts = ()

    @property
    def top_interest(self) -> str:
        return self.interests[0][0] if self.interests else ""


def stage_for(path: str, settings: ContextSettings) -> str:
    """The furthest configured stage whose patterns match ``path``; "" when none does."""
    return page_of(path, settings)[0]


def interests_for(path: str, settings: ContextSettings) -> tuple[str, ...]:
    """Every interest category whose patterns match ``path``, in configured order."""
    return page_of(path, settings)[1]


_pages: OrderedDict[str, tuple[ContextSettings, tuple[str, tuple[str, ...]]]] = OrderedDict()


def page_of(path: str, settings: ContextSettings) -> tuple[str, tuple[str, ...]]:
    """(stage, interest categories) of ``path``.

    Memoised per path (FIFO, 4,096 short paths), because a site's views repeat a few
    pages and every view asks twice (the visitor state, the context); an entry is only
    reused for the very settings object it was computed with.
    """
    hit = _pages.get(path)
    if hit is not None and hit[0] is settings:
        return hit[1]
    found = (_match_stage(path, settings), _match_interests(path, settings))
    if len(path) <= MAX_CACHED_PATH_CHARS:
        if len(_pages) >= PAGE_CACHE_SIZE:
            with suppress(KeyError):  # emptied meanwhile by another thread
                _pages.popitem(last=False)  # O(1), unlike a dict's next(iter())
        _pages[path] = (settings, found)
    return found


def _match_stage(path: str, settings: ContextSettings) -> str:
    for rule in reversed(settings.journey_stages):
        if rule.regex.fullmatch(path):
            return rule.name
    return ""


def _match_interests(path: str, settings: ContextSettings) -> tuple[str, ...]:
    return tuple(rule.name for rule in settings.interests if rule.regex.fullmatch(path))


def furthest(current: str, new: str, settings: ContextSettings) -> str:
    """The later of two stages in the configured order (an unknown stage ranks lowest)."""
    if not new:
        return current
    return new if settings.stage_rank(new) > settings.stage_rank(current) else current


def count_interests(counts: Counts, seen: tuple[str, ...], slots: int) -> Counts:
    """Add one to each category in ``seen``, keeping at most ``slots`` (Space-Saving)."""
    if not seen:
        return counts
    table = dict(counts)
    for name in seen:
        if name in table:
            table[name] = min(table[name] + 1, MAX_COUNT)
        elif len(table) < slots:
            table[name] = 1
        else:
            weakest = min(table, key=lambda k: (table[k], k))
            floor = table.pop(weakest)
            table[name] = min(floor + 1, MAX_COUNT)
    return sort_counts(table.items(), slots)


def sort_counts(items: object, slots: int) -> Counts:
    """Highest count first, then by name, so the order (and top interest) is stable."""
    ranked = sorted(items, key=lambda kv: (-kv[1], kv[0]))  # type: ignore[call-overload]
    return tuple(ranked[:slots])


def journey_for(
    path: str, settings: ContextSettings, furthest_stage: str, counts: Counts
) -> Journey:
    """The :class:`Journey` of a request, from its path and the (already advanced) history."""
    stage, current = page_of(path, settings)
    return Journey(stage, furthest_stage, current, counts)  # positional: on every view
