"""What the proxy records: small frozen values built on the request path and counted later.

An event is only a value. It becomes Redis commands in the background flusher
(:func:`proxy.store.keys.Keyspace.commands_for`), so building one on the request path costs a
dataclass allocation and a format check, never I/O.

Adding an event type is: a frozen dataclass here, added to the ``Event`` union, and one
branch in ``Keyspace.commands_for``. Events carry aggregate coordinates (experiment, arm, day),
never a visitor id: Redis holds counts per arm and day, never per-visitor sets that grow
without bound. What must be counted once per visitor (an exposure, a binary conversion) is
deduplicated by the proxy with the signed visitor cookie before the event is built.

Names (experiment, arm, goal) are checked when the event becomes commands, not here: a bad
name drops that one event in the flusher, it never raises on the request path.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from ..values import quick_init

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
# Days already found valid: every event of a page view carries the same day, and the regex
# costs more than the set lookup. Bounded, in case a caller passes many distinct days.
_VALID_DAYS: set[str] = set()
_VALID_DAYS_KEPT = 64


def utc_day(timestamp: float | None = None) -> str:
    """The UTC calendar day of ``timestamp`` (now by default) as ``YYYY-MM-DD``.

    Counts are bucketed by UTC day so that every worker and every machine agree on where a
    day ends, whatever their local time zone.
    """
    return _day_text(int(time.time() if timestamp is None else timestamp) // 86_400)


@lru_cache(maxsize=8)
def _day_text(day_number: int) -> str:
    """Formatting a date costs microseconds on every page view; a day has one name."""
    return time.strftime("%Y-%m-%d", time.gmtime(day_number * 86_400))


def check_day(day: str, where: str) -> None:
    """Reject anything but ``YYYY-MM-DD``: the day becomes part of a Redis key."""
    if type(day) is str and day in _VALID_DAYS:   # not isinstance: a str subclass may hash
        return                                     # or compare its own way
    if not (isinstance(day, str) and _DAY.fullmatch(day)):
        raise ValueError(f"{where} = {day!r} is not valid: expected a UTC day like '2026-11-22'")
    if type(day) is str:
        if len(_VALID_DAYS) >= _VALID_DAYS_KEPT:
            _VALID_DAYS.clear()
        _VALID_DAYS.add(day)


@quick_init
@dataclass(frozen=True, slots=True)
class PageView:
    """One HTML page served through the proxy on UTC ``day``."""

    day: str

    def __post_init__(self) -> None:
        check_day(self.day, "PageView.day")


def period_id(at: datetime) -> str:
    """The id of the weight period that starts at ``at`` (a :class:`WeightChange`): its Unix
    time in whole seconds. Exposures carry it so that units can be counted per period, which
    the sample-ratio check needs once a bandit has changed the weights."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"period_id: {at.isoformat()} has no UTC offset")
    return str(math.floor(at.timestamp()))


def _finite(value: float, where: str) -> None:
    if type(value) is float and math.isfinite(value):   # the common case, in one check
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where} = {value!r} is not valid: expected a finite number")


@dataclass(frozen=True, slots=True)
class Exposure:
    """A visitor shown ``arm`` of ``experiment`` for the first time, on UTC ``day``.

    One per visitor and experiment (the proxy knows from the cookie whether it has counted the
    visitor already). ``probability`` is the chance the assignment gave this arm at that
    moment (its weight; after a bandit update, the bandit's weight); its inverse is summed
    per arm, the inverse-propensity total that offline evaluation of another policy needs.
    ``period`` is :func:`period_id` of the bandit weights in force, "" for fixed weights.
    ``covariate`` is the visitor's pre-exposure covariate x for CUPED (statistics.md, "Health
    checks"; :mod:`proxy.experiment_runtime` says which x), None when it is not known: the
    store then counts the unit without x (``<arm>:xn``, ``:x``, ``:xsq`` stay as they are).
    """

    experiment: str
    arm: str
    day: str
    probability: float
    period: str = ""
    covariate: float | None = None

    def __post_init__(self) -> None:
        check_day(self.day, "Exposure.day")
        _finite(self.probability, "Exposure.probability")
        if self.covariate is not None:
            _finite(self.covariate, "Exposure.covariate")
        if not 0.0 < self.probability <= 1.0:
            raise ValueError(f"Exposure.probability = {self.probability!r} is not valid: "
                             "expected a chance in (0, 1]")


@dataclass(frozen=True, slots=True)
class Conversion:
    """A visitor in ``arm`` reached ``goal`` on UTC ``day``.

    For the variance of a mean metric the store needs Q = sum over visitors of the square of
    each visitor's total (statistics.md), but it never sees visitors. The proxy knows the
    visitor's running total t from the cookie and sends ``value`` = v and
    ``value_sq_delta`` = (t + v)^2 - t^2: summed over a visitor's conversions the deltas
    telescope to (total)^2. Build them with :meth:`revenue` and :meth:`binary`.

    CUPED needs sum over visitors of x * total, x being the visitor's pre-exposure covariate
    (the one its :class:`Exposure` carried). ``covariate`` = x, remembered in the cookie,
    makes the store add x * v to ``<arm>:xy``: over a visitor's conversions that telescopes
    to x * total. None (x not known) adds nothing there.
    """

    experiment: str
    goal: str
    arm: str
    day: str
    value: float = 1.0
    value_sq_delta: float = 1.0
    covariate: float | None = None

    def __post_init__(self) -> None:
        check_day(self.day, "Conversion.day")
        _finite(self.value, "Conversion.value")
        _finite(self.value_sq_delta, "Conversion.value_sq_delta")
        if self.covariate is not None:
            _finite(self.covariate, "Conversion.covariate")

    @classmethod
    def binary(cls, experiment: str, goal: str, arm: str, day: str,
               covariate: float | None = None) -> Conversion:
        """A converted-or-not goal: y = 1 once per visitor (the cookie deduplicates)."""
        return cls(experiment, goal, arm, day, 1.0, 1.0, covariate)

    @classmethod
    def revenue(cls, experiment: str, goal: str, arm: str, day: str, value: float,
                previous_total: float, covariate: float | None = None) -> Conversion:
        """``value`` added to a visitor whose total so far in this goal is ``previous_total``;
        v (2t + v) is (t + v)^2 - t^2 without the cancellation of two large squares."""
        return cls(experiment, goal, arm, day, value, value * (2.0 * previous_total + value),
                   covariate)


@dataclass(frozen=True, slots=True)
class WeightChange:
    """A bandit published new ``weights`` (arm, weight) for ``experiment``, in force from
    ``at`` (aware; whole seconds are what :func:`period_id` keeps)."""

    experiment: str
    at: datetime
    weights: tuple[tuple[str, float], ...]

    def __post_init__(self) -> None:
        period_id(self.at)  # aware, or ValueError
        if not self.weights:
            raise ValueError(f"WeightChange({self.experiment!r}): no weights")
        for arm, weight in self.weights:
            _finite(weight, f"WeightChange({self.experiment!r}) weight of {arm!r}")


@quick_init
@dataclass(frozen=True, slots=True)
class Guardrail:
    """One page of ``arm`` served through the proxy: what the origin cost (latency), whether
    it failed (a 5xx), and how many bytes went to the visitor. Guardrails tell whether an arm
    hurts the site while the goals say whether it helps."""

    experiment: str
    arm: str
    day: str
    latency_ms: float
    error: bool
    bytes: int

    def __post_init__(self) -> None:
        check_day(self.day, "Guardrail.day")
        _finite(self.latency_ms, "Guardrail.latency_ms")
        if self.latency_ms < 0 or isinstance(self.bytes, bool) or not isinstance(
                self.bytes, int) or self.bytes < 0:
            raise ValueError(f"Guardrail({self.experiment!r}, {self.arm!r}): latency_ms "
                             f"{self.latency_ms!r} and bytes {self.bytes!r} must be >= 0")


Event = PageView | Exposure | Conversion | WeightChange | Guardrail
