"""Signals from outside: facts about the world, not the visitor (``weather.berlin = "rain"``).

Something outside Kairos (a cron job, a webhook) writes them into one Redis hash; a
background task of the proxy reads the hash every few seconds and swaps in a new
:class:`SignalSnapshot`, so a request only ever reads an immutable object in memory. This
module is the pure part: turning the hash's raw bytes into a validated snapshot.

Values are JSON scalars when they parse as one (``21.5`` → 21.5, ``true`` → True,
``"7"`` → the string "7") and text otherwise (``rain`` → "rain"), so that rules can
compare numbers as numbers. Bad entries (undecodable, badly named, too long, a JSON
object or list) are skipped, not fatal: one bad writer must not blank every signal.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

Scalar = str | int | float | bool
MAX_SIGNALS = 1000
MAX_VALUE_CHARS = 256
_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
_MAX_NAME = 64


@dataclass(frozen=True, slots=True)
class SignalSnapshot(Mapping[str, Scalar]):
    """An immutable name → value mapping, with the time it was read (Unix s, 0 = never)."""

    values: Mapping[str, Scalar] = field(default_factory=lambda: MappingProxyType({}))
    fetched_at: float = 0.0
    skipped: int = 0  # entries of the hash that were not valid

    def __getitem__(self, name: str) -> Scalar:
        return self.values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


NO_SIGNALS = SignalSnapshot()


def parse_signal_hash(
    raw: Mapping[bytes | str, bytes | str], fetched_at: float = 0.0
) -> SignalSnapshot:
    """A snapshot from ``HGETALL``'s result (bytes or str keys and values; never raises)."""
    values: dict[str, Scalar] = {}
    skipped = 0
    for key, value in sorted(raw.items(), key=lambda kv: _text(kv[0]) or ""):
        name = _text(key)
        text = _text(value)
        if (
            name is None or text is None or len(values) >= MAX_SIGNALS
            or len(name) > _MAX_NAME or not _NAME.fullmatch(name)
            or len(text) > MAX_VALUE_CHARS
        ):
            skipped += 1
            continue
        parsed = parse_value(text)
        if parsed is None:
            skipped += 1
            continue
        values[name] = parsed
    return SignalSnapshot(MappingProxyType(values), fetched_at, skipped)


def parse_value(text: str) -> Scalar | None:
    """A JSON scalar when ``text`` is one, else the trimmed text; None for JSON null,
    objects, lists and non-finite numbers."""
    text = text.strip()
    if not text:
        return ""
    if text[0] in '-0123456789tfn"[{':
        try:
            value = json.loads(text)
        except ValueError:
            return text if text[0] not in '"[{' else None
        if isinstance(value, bool | int | str):
            return value
        if isinstance(value, float) and value == value and abs(value) != float("inf"):
            return value
        return None
    return text


def _text(value: bytes | str) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None
