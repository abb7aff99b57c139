"""The client address: the dotted-quad fast path gives exactly ipaddress's answers."""

from __future__ import annotations

import ipaddress
import random

import pytest

from proxy import client_ip
from proxy.client_ip import TrustedNetworks
from proxy.context.geo import ipv4_int

NETWORKS = [ipaddress.ip_network(n) for n in
            ("10.0.0.0/8", "127.0.0.1/32", "192.168.16.0/20", "::1/128", "2001:db8::/32",
             "::ffff:172.16.0.0/108")]

EDGE_CASES = [
    "", ".", "...", "1.2.3", "1.2.3.4.5", "1.2.3.", ".1.2.3", "1..2.3", "0.0.0.0",
    "255.255.255.255", "256.1.1.1", "1.2.3.256", "999.1.1.1", "010.1.1.1", "1.2.3.04",
    "00.1.1.1", "0.0.0.00", "01.2.3.4", "0x7f.0.0.1", "127.1", "1.2.3.4 ", " 1.2.3.4",
    "1.2.3.4\n", "\t1.2.3.4", "1.2.3.4:80", "[1.2.3.4]", "+1.2.3.4", "-1.2.3.4", "1_0.1.1.1",
    "1.2.3.4/32", "1.2.3.4%eth0", "١.٢.٣.٤", "１.２.３.４", "1.2.3.４", "1.2.3.4\x00",
    "10.0.0.1", "10.255.255.255", "11.0.0.0", "9.255.255.255", "127.0.0.1", "127.0.0.2",
    "192.168.16.0", "192.168.31.255", "192.168.32.0", "192.168.15.255", "::1", "::2",
    "2001:db8::1", "2001:db9::1", "::ffff:10.1.2.3", "::ffff:11.1.2.3", "::ffff:172.16.0.9",
    "172.16.0.9", "::ffff:127.0.0.1", "fe80::1%eth0", "::", "1::2::3", "unknown", "garbage",
]


def _reference_is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _reference_contains(address: str, networks: list) -> bool:
    """TrustedNetworks._contains as it was, on ipaddress alone."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


def _generated(count: int, seed: int) -> list[str]:
    """Dotted quads near the octet limits and near-misses: leading zeros, extra or missing
    parts, stray characters, each octet from a small set of interesting values."""
    rng = random.Random(seed)
    octets = ["0", "1", "9", "10", "99", "100", "127", "168", "192", "199", "200", "249",
              "250", "255", "256", "299", "300", "999", "00", "01", "010", "0255", "1000", ""]
    found = []
    for _ in range(count):
        parts = [rng.choice(octets) if rng.random() < 0.3 else str(rng.randint(0, 255))
                 for _ in range(rng.choice((4, 4, 4, 4, 3, 5)))]
        text = ".".join(parts)
        if rng.random() < 0.1:
            spot = rng.randrange(len(text) + 1)
            text = text[:spot] + rng.choice(" :x/%\t+-_ab") + text[spot:]
        found.append(text)
    return found


@pytest.mark.parametrize("text", EDGE_CASES + _generated(4000, seed=7))
def test_ipv4_int_agrees_with_ipaddress(text: str) -> None:
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        parsed = None
    expected = int(parsed) if isinstance(parsed, ipaddress.IPv4Address) else None
    assert ipv4_int(text) == expected


def test_membership_and_address_checks_agree_with_ipaddress() -> None:
    trusted = TrustedNetworks(NETWORKS)
    rng = random.Random(3)
    random_v4 = [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(3000)]
    near = [f"{a}.{b}.{c}.{d}" for a in (9, 10, 11, 127, 192) for b in (0, 168, 255)
            for c in (0, 15, 16, 31, 32) for d in (0, 1, 2, 255)]
    for text in EDGE_CASES + _generated(3000, seed=11) + random_v4 + near:
        assert trusted.contains(text) == _reference_contains(text, NETWORKS), text
        # what _rightmost_untrusted believes is an address: a dotted quad, else ipaddress's
        assert (ipv4_int(text) is not None or client_ip._parses_as_ip(text)) == \
            _reference_is_ip(text), text


def test_only_ipv6_networks_trust_no_dotted_quad() -> None:
    trusted = TrustedNetworks([ipaddress.ip_network("::/0")])
    assert not trusted.contains("10.1.2.3")
    assert trusted.contains("2001:db8::1")
    assert TrustedNetworks([ipaddress.ip_network("0.0.0.0/0")]).contains("203.0.113.9")


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        ("127.0.0.1", "6.6.6.6, 203.0.113.9, 10.1.1.1", "203.0.113.9"),
        ("127.0.0.1", "203.0.113.9, 10.1.1.1, 10.2.2.2", "203.0.113.9"),
        ("127.0.0.1", "10.1.1.1, 10.2.2.2", "10.1.1.1"),  # all trusted: the leftmost
        ("127.0.0.1", "203.0.113.9:8080", "203.0.113.9"),
        ("127.0.0.1", "[2001:db9::7]:443, 10.1.1.1", "2001:db9::7"),
        ("127.0.0.1", "::ffff:10.9.9.9, 10.1.1.1", "::ffff:10.9.9.9"),  # mapped: trusted
        ("127.0.0.1", "203.0.113.9, ::ffff:10.9.9.9", "203.0.113.9"),
        ("127.0.0.1", "203.0.113.9, 010.1.1.1", "127.0.0.1"),  # not an address: stop
        ("127.0.0.1", "203.0.113.9, unknown", "127.0.0.1"),
        ("::ffff:127.0.0.1", "203.0.113.9", "203.0.113.9"),  # mapped peer
        ("198.51.100.4", "203.0.113.9", "198.51.100.4"),  # untrusted peer: no XFF
    ],
)
def test_resolve_walks_the_chain_from_the_right(peer: str, xff: str, expected: str) -> None:
    trusted = TrustedNetworks(NETWORKS)
    headers = [(b"x-forwarded-for", xff.encode())]
    assert client_ip.resolve(peer, "http", headers, trusted).ip == expected
