"""Signals from outside: parsing a Redis hash's raw bytes into a frozen snapshot."""

from __future__ import annotations

import pytest

from proxy.context.signals import NO_SIGNALS, SignalSnapshot, parse_signal_hash, parse_value


def test_parse_a_hash_of_bytes() -> None:
    snapshot = parse_signal_hash({
        b"weather.berlin": b"rain",
        b"weather.berlin.celsius": b"21.5",
        b"stock.sku-123": b"4",
        b"sale.active": b"true",
        b"label": b'"007"',
        "campaign.name": "Sommer 2025",
    }, fetched_at=1_750_000_000.0)
    assert dict(snapshot) == {
        "weather.berlin": "rain", "weather.berlin.celsius": 21.5, "stock.sku-123": 4,
        "sale.active": True, "label": "007", "campaign.name": "Sommer 2025",
    }
    assert snapshot["weather.berlin"] == "rain" and snapshot.get("nope") is None
    assert snapshot.fetched_at == 1_750_000_000.0 and snapshot.skipped == 0


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"Weather.Berlin", b"rain"),  # names are lower-case
        (b"weather..berlin", b"rain"),
        (b".weather", b"rain"),
        (b"weather berlin", b"rain"),
        (b"\xff\xfe", b"rain"),
        (b"weather.berlin", b"\xff\xfe"),
        (b"w" * 65, b"rain"),
        (b"weather.berlin", b"x" * 257),
        (b"weather.berlin", b'{"a": 1}'),
        (b"weather.berlin", b"[1, 2]"),
        (b"weather.berlin", b"null"),
        (b"weather.berlin", b"1e999"),
    ],
)
def test_bad_entries_are_skipped_not_fatal(key: bytes, value: bytes) -> None:
    snapshot = parse_signal_hash({key: value, b"ok.signal": b"yes"})
    assert dict(snapshot) == {"ok.signal": "yes"}
    assert snapshot.skipped == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [("rain", "rain"), ("  rain ", "rain"), ("42", 42), ("-3", -3), ("0.5", 0.5),
     ("false", False), ('"42"', "42"), ("", ""), ("nice", "nice"), ("tomorrow", "tomorrow"),
     ("12 apples", "12 apples"), ("NaN", "NaN"), ('"unterminated', None)],
)
def test_values(text: str, expected: object) -> None:
    value = parse_value(text)
    assert value == expected and type(value) is type(expected)


def test_snapshot_is_immutable_and_bounded() -> None:
    snapshot = parse_signal_hash({f"s.{i}".encode(): b"1" for i in range(1500)})
    assert len(snapshot) == 1000 and snapshot.skipped == 500
    with pytest.raises(TypeError):
        snapshot.values["s.1"] = 2  # type: ignore[index]
    assert SignalSnapshot() == NO_SIGNALS and len(NO_SIGNALS) == 0
