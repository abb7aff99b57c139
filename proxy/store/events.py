"""What the proxy records: small frozen values built on the request path and counted later.

An event is only a value. It becomes Redis commands in the background flusher
(:func:`proxy.store.keys.Keyspace.commands_for`), so building one on the request path costs a
dataclass allocation and a format check, never I/O.

Adding an event type (``Exposure``, ``Conversion``, ...) is: a frozen dataclass here, added to
the ``Event`` union, and one branch in ``Keyspace.commands_for``. Events carry aggregate
coordinates (experiment, arm, day), never a visitor id: Redis holds counts per arm and day,
never per-visitor sets that grow without bound.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def utc_day(timestamp: float | None = None) -> str:
    """The UTC calendar day of ``timestamp`` (now by default) as ``YYYY-MM-DD``.

    Counts are bucketed by UTC day so that every worker and every machine agree on where a
    day ends, whatever their local time zone.
    """
    return time.strftime("%Y-%m-%d", time.gmtime(timestamp))


def check_day(day: str, where: str) -> None:
    """Reject anything but ``YYYY-MM-DD``: the day becomes part of a Redis key."""
    if not (isinstance(day, str) and _DAY.fullmatch(day)):
        raise ValueError(f"{where} = {day!r} is not valid: expected a UTC day like '2026-11-22'")


@dataclass(frozen=True, slots=True)
class PageView:
    """One HTML page served through the proxy on UTC ``day``."""

    day: str

    def __post_init__(self) -> None:
        check_day(self.day, "PageView.day")


# Grows as event types are added: ``PageView | Exposure | Conversion``.
Event = PageView
