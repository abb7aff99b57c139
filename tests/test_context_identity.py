"""The visitor cookie: signing, rotation, rejection of bad cookies, visits and the header."""

from __future__ import annotations

import base64
import random
import struct
from dataclasses import replace

import pytest

from proxy.context import identity
from proxy.context.identity import (
    MAX_AGE_DAYS,
    VisitorState,
    advance,
    decode,
    encode,
    opt_out,
    read_cookie,
    set_cookie_header,
)
from proxy.context.settings import ContextSettings, parse_settings

KEY = "k" * 32
OLD_KEY = "o" * 32
NOW = 1_750_000_000.0  # 2025-06-15
DAY = 86_400
SETTINGS = parse_settings({"interests": {"shoes": ["/products/shoes*"], "bags": ["/bags*"],
                                         "hats": ["/hats*"]}, "interest_slots": 2})


def full_state(**changes: object) -> VisitorState:
    state = VisitorState(
        visitor_id="0123456789abcdef0123456789abcdef", first_seen=int(NOW) - 40 * DAY,
        visit_start=int(NOW) - 600, last_seen=int(NOW) - 60,
        previous_visit_end=int(NOW) - 3 * DAY, visit_number=7, visit_pages=12,
        landing_page="/produkte/größe-42", stage="purchase", entry_source="search/google",
        entry_campaign="sommer-sale", interests=(("shoes", 9), ("bags", 2)),
    )
    return replace(state, **changes)


def resign(payload: bytes, key: str = KEY) -> str:
    raw = payload + identity._tag(key.encode(), payload)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def payload_of(cookie: str) -> bytes:
    raw = base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4))
    return raw[:-identity.TAG_BYTES]


def test_round_trip_keeps_every_field() -> None:
    state = full_state()
    cookie = encode(state, KEY)
    assert decode(cookie, (KEY,), NOW) == state
    assert len(cookie) < 200  # compact
    assert set(cookie) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_opted_out_round_trips() -> None:
    state = opt_out(NOW)
    decoded = decode(encode(state, KEY), (KEY,), NOW)
    assert decoded is not None and decoded.opted_out
    assert decoded.visitor_id == "0" * 32 and decoded.interests == ()


def test_rotation_first_signs_all_verify() -> None:
    old_cookie = encode(full_state(), OLD_KEY)
    assert decode(old_cookie, (KEY, OLD_KEY), NOW) == full_state()
    assert decode(old_cookie, (KEY,), NOW) is None
    assert decode(encode(full_state(), KEY), (KEY, OLD_KEY), NOW) == full_state()


def _flip(cookie: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4)))
    raw[20] ^= 0x01  # inside the visitor id
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


GOOD = encode(full_state(), KEY)
BAD_COOKIES = {
    "none": None,
    "empty": "",
    "garbage": "hello world",
    "not base64": "!!!!$$$$",
    "truncated": GOOD[:30],
    "tag cut": GOOD[:-4],
    "forged byte": _flip(GOOD),
    "other key": encode(full_state(), "x" * 32),
    "oversized": GOOD + "A" * (4097 - len(GOOD)),
    "unknown version": resign(b"\x02" + payload_of(GOOD)[1:]),
    "trailing bytes": resign(payload_of(GOOD) + b"\x00"),
    "interest past end": resign(payload_of(GOOD)[:-3]),
    "bad utf-8": resign(payload_of(encode(full_state(landing_page="/x"), KEY)).replace(
        b"\x02/x", b"\x02\xff\xfe")),
    "expired": encode(full_state(last_seen=int(NOW) - (MAX_AGE_DAYS + 1) * DAY,
                                 visit_start=int(NOW) - 500 * DAY,
                                 first_seen=int(NOW) - 500 * DAY), KEY),
    "from the future": encode(full_state(last_seen=int(NOW) + 3 * DAY), KEY),
    "inconsistent times": resign(payload_of(encode(full_state(), KEY))[:18]
                                 + struct.pack(">I", int(NOW)) + payload_of(GOOD)[22:]),
}


@pytest.mark.parametrize("name", BAD_COOKIES)
def test_bad_cookies_decode_to_none(name: str) -> None:
    assert decode(BAD_COOKIES[name], (KEY,), NOW) is None


def test_the_bad_cookie_table_is_built_from_valid_pieces() -> None:
    # The re-signing helper must produce accepted cookies, or the table proves nothing.
    assert decode(resign(payload_of(GOOD)), (KEY,), NOW) == full_state()


def test_expiry_follows_max_age_days() -> None:
    cookie = encode(full_state(last_seen=int(NOW) - 10 * DAY, visit_start=int(NOW) - 10 * DAY), KEY)
    assert decode(cookie, (KEY,), NOW, max_age_days=30) is not None
    assert decode(cookie, (KEY,), NOW, max_age_days=9) is None


def test_random_input_never_raises() -> None:
    rng = random.Random(7)
    alphabet = "ABCabc0123-_=+/\"; \x00é"
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300)))
        assert decode(text, (KEY,), NOW) is None
    for _ in range(200):
        raw = bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
        assert decode(base64.urlsafe_b64encode(raw).decode(), (KEY,), NOW) is None


def test_long_fields_are_clipped_and_the_cookie_stays_small() -> None:
    state = full_state(landing_page="/" + "ä" * 500, entry_campaign="c" * 300,
                       interests=tuple((f"{'n' * 60}{i}", 9) for i in range(16)))
    decoded = decode(encode(state, KEY), (KEY,), NOW)
    assert decoded is not None
    assert len(decoded.landing_page.encode()) <= 200 and decoded.landing_page.startswith("/ää")
    assert decoded.entry_campaign == "c" * 64
    assert len(encode(state, KEY)) < 4096


def test_new_visitor() -> None:
    state = advance(None, NOW, "/products/shoes/42", SETTINGS, entry_source="search/bing")
    assert len(state.visitor_id) == 32 and int(state.visitor_id, 16) >= 0
    assert (state.visit_number, state.visit_pages, state.landing_page) == (1, 1,
                                                                          "/products/shoes/42")
    assert state.first_seen == state.last_seen == int(NOW)
    assert state.stage == "consideration" and state.entry_source == "search/bing"
    assert not state.returning and state.days_since_last_visit is None
    assert state.interests == (("shoes", 1),)
    ids = {advance(None, NOW, "/", SETTINGS).visitor_id for _ in range(50)}
    assert len(ids) == 50


@pytest.mark.parametrize(
    ("minutes_later", "timeout", "visit", "pages", "landing"),
    [
        (1, 30, 1, 2, "/"),
        (29, 30, 1, 2, "/"),
        (30, 30, 1, 2, "/"),
        (31, 30, 2, 1, "/checkout"),
        (6, 5, 2, 1, "/checkout"),
        (4, 5, 1, 2, "/"),
    ],
)
def test_visits_split_after_inactivity(
    minutes_later: int, timeout: int, visit: int, pages: int, landing: str
) -> None:
    settings = parse_settings({"visit_timeout_minutes": timeout})
    first = advance(None, NOW, "/", settings)
    second = advance(first, NOW + minutes_later * 60, "/checkout", settings)
    assert (second.visit_number, second.visit_pages, second.landing_page) == (visit, pages,
                                                                             landing)
    assert second.visitor_id == first.visitor_id and second.first_seen == first.first_seen
    assert second.returning is (visit == 2)


def test_days_since_last_visit() -> None:
    first = advance(None, NOW, "/", ContextSettings())
    later = advance(first, NOW + 3 * DAY + 3600, "/", ContextSettings())
    assert later.days_since_last_visit == 3
    assert later.previous_visit_end == int(NOW)
    again = advance(later, NOW + 3 * DAY + 3700, "/", ContextSettings())
    assert again.days_since_last_visit == 3 and again.visit_pages == 2


def test_furthest_stage_is_kept() -> None:
    state = advance(None, NOW, "/checkout/cart", ContextSettings())
    assert state.stage == "purchase"
    state = advance(state, NOW + 10, "/", ContextSettings())
    assert state.stage == "purchase"
    state = advance(state, NOW + 20, "/checkout/complete", ContextSettings())
    assert state.stage == "customer"
    state = advance(state, NOW + 90 * 60, "/products/x", ContextSettings())  # new visit
    assert state.stage == "customer"


def test_interests_are_bounded_and_new_ones_can_rise() -> None:
    state = advance(None, NOW, "/products/shoes/1", SETTINGS)
    for i in range(3):
        state = advance(state, NOW + i, "/products/shoes/2", SETTINGS)
    state = advance(state, NOW + 10, "/bags/a", SETTINGS)
    assert state.interests == (("shoes", 4), ("bags", 1))
    for i in range(5):  # two slots only: hats replaces bags and climbs past shoes
        state = advance(state, NOW + 20 + i, "/hats/b", SETTINGS)
    assert [name for name, _ in state.interests] == ["hats", "shoes"]
    assert len(state.interests) == 2


def test_opted_out_state_is_not_advanced() -> None:
    state = opt_out(NOW)
    assert advance(state, NOW + 5000, "/checkout", ContextSettings()) is state


@pytest.mark.parametrize(
    ("scheme", "days", "expected"),
    [
        ("https", 395, "kairos_v=abc; Path=/; Max-Age=34128000; HttpOnly; SameSite=Lax; Secure"),
        ("http", 395, "kairos_v=abc; Path=/; Max-Age=34128000; HttpOnly; SameSite=Lax"),
        ("HTTPS", 30, "kairos_v=abc; Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax; Secure"),
        ("https", 3650, "kairos_v=abc; Path=/; Max-Age=34128000; HttpOnly; SameSite=Lax; Secure"),
        ("http", 0, "kairos_v=abc; Path=/; Max-Age=86400; HttpOnly; SameSite=Lax"),
    ],
)
def test_set_cookie_header(scheme: str, days: int, expected: str) -> None:
    assert set_cookie_header("kairos_v", "abc", scheme=scheme, max_age_days=days) == expected


def test_expire_cookie_header() -> None:
    assert identity.expire_cookie_header("kairos_v", scheme="https") == (
        "kairos_v=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax; Secure")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("kairos_v=abc", "abc"),
        ("a=1; kairos_v=abc; b=2", "abc"),
        ("a=1;kairos_v=abc", "abc"),
        ("xkairos_v=zzz; kairos_v=abc", "abc"),
        ("kairos_v=first; kairos_v=second", "first"),
        ("a=1; b=2", None),
        ("", None),
        ("kairos_v", None),
    ],
)
def test_read_cookie(header: str, expected: str | None) -> None:
    assert read_cookie(header, "kairos_v") == expected


def test_experiment_memberships_round_trip_and_survive_page_views() -> None:
    from proxy.context.identity import MAX_MEMBERSHIPS, Membership, with_membership
    from proxy.context.settings import ContextSettings

    state = identity.advance(None, 1_750_000_000, "/", ContextSettings())
    member = Membership("hero", "b", 0xDEADBEEF, exposed=True,
                        goals=(("checkout", 1.0), ("revenue", 129.5)))
    state = with_membership(state, member)
    decoded = identity.decode(identity.encode(state, "k" * 32), ("k" * 32,), 1_750_000_100)
    assert decoded is not None and decoded.experiments == (member,)
    assert decoded.membership("hero") == member
    assert decoded.membership("hero").total("revenue") == 129.5  # type: ignore[union-attr]
    later = identity.advance(decoded, 1_750_000_200, "/products/", ContextSettings())
    assert later.experiments == (member,)
    for i in range(MAX_MEMBERSHIPS + 3):
        later = with_membership(later, Membership(f"e{i}", "a", i))
    assert len(later.experiments) == MAX_MEMBERSHIPS
    assert later.experiments[-1].experiment == f"e{MAX_MEMBERSHIPS + 2}"
    assert later.membership("hero") is None       # the oldest gave way
    assert len(identity.encode(later, "k" * 32)) < 1200


def test_memberships_keep_names_of_the_longest_valid_length() -> None:
    """Experiment, arm and goal names may be 64 characters: a clipped name would never match
    its experiment again, and the visitor would be exposed (and counted) on every page."""
    name = "e" * 64
    state = identity.with_membership(
        identity.advance(None, NOW, "/", SETTINGS),
        identity.Membership(name, "a" * 64, 7, True, (("g" * 64, 1.0),)))
    back = identity.decode(identity.encode(state, KEY), (KEY,), NOW)
    assert back is not None and back.membership(name) == state.membership(name)


# -- the encoder's fast paths against the encoder as first written -------------------------

PINNED_COOKIE = (
    "AQABI0VniavN7wEjRWeJq83vaBolgGhO3yhoTuFEaErtAAAAAAcADBQvcHJvZHVrdGUvZ3LDtsOfZS00MghwdXJj"
    "aGFzZQ1zZWFyY2gvZ29vZ2xlC3NvbW1lci1zYWxlAgVzaG9lcwAJBGJhZ3MAAgIEaGVybwFiB1vNFQECAn54QBgA"
    "AAAAAAAIY2hlY2tvdXQ_8AAAAAAAABFjdGFAbW9iaWxlLnNlYXJjaARzaG9wAAAAKgAA")
PINNED_TAGS = {KEY: "AG653_3JIPZAzYv8jbBL4w", b"raw-bytes-key": "E5ZrLFjK4MLW4lMqQclyyQ"}


def pinned_state() -> VisitorState:
    return full_state(experiments=(
        identity.Membership("hero", "b", 123456789, True, (("~x", 6.0), ("checkout", 1.0))),
        identity.Membership("cta@mobile.search", "shop", 42, False, ())))


def reference_encode(state: VisitorState, secret: str | bytes) -> str:
    """encode() as first written: clip, then pack, field by field; hmac.digest per cookie."""
    import hmac

    def clip(text: str, limit: int) -> str:
        data = text.encode("utf-8", "replace")
        return text if len(data) <= limit else data[:limit].decode("utf-8", "ignore")

    def clip_name(text: str) -> str:
        return text.encode("utf-8", "replace")[:64].decode("utf-8", "ignore")

    def pack_str(text: str) -> bytes:
        data = text.encode("utf-8")
        return struct.pack(">B", len(data)) + data

    def u32(value: int) -> int:
        return min(max(int(value), 0), 0xFFFFFFFF)

    parts = [struct.pack(
        ">BB16sIIIIIH", 1, 1 if state.opted_out else 0, bytes.fromhex(state.visitor_id),
        u32(state.first_seen), u32(state.visit_start), u32(state.last_seen),
        u32(state.previous_visit_end), u32(state.visit_number),
        min(max(state.visit_pages, 0), 0xFFFF))]
    for name, limit in (("landing_page", 200), ("stage", 40), ("entry_source", 40),
                        ("entry_campaign", 64)):
        parts.append(pack_str(clip(getattr(state, name), limit)))
    interests = state.interests[:255]
    parts.append(struct.pack(">B", len(interests)))
    for name, count in interests:
        parts += [pack_str(clip(name, 40)), struct.pack(">H", min(max(count, 0), 0xFFFF))]
    if state.experiments:
        members = state.experiments[-identity.MAX_MEMBERSHIPS:]
        parts.append(struct.pack(">B", len(members)))
        for m in members:
            goals = m.goals[:identity.MAX_GOALS]
            parts += [pack_str(clip_name(m.experiment)), pack_str(clip_name(m.arm)),
                      struct.pack(">IBB", m.salt_tag & 0xFFFFFFFF, int(m.exposed), len(goals))]
            for goal, total in goals:
                parts += [pack_str(clip_name(goal)), struct.pack(">d", total)]
    payload = b"".join(parts)
    key = secret.encode() if isinstance(secret, str) else secret
    tag = hmac.digest(key, b"kairos-visitor\0" + payload, "sha256")[:identity.TAG_BYTES]
    return base64.urlsafe_b64encode(payload + tag).rstrip(b"=").decode("ascii")


@pytest.mark.parametrize("secret", list(PINNED_TAGS))
def test_cookies_are_the_ones_the_first_implementation_made(secret: str | bytes) -> None:
    cookie = encode(pinned_state(), secret)
    assert cookie == PINNED_COOKIE + PINNED_TAGS[secret] == reference_encode(pinned_state(),
                                                                             secret)
    assert decode(cookie, (secret,), NOW) == pinned_state()


def random_text(rng: random.Random, longest: int) -> str:
    alphabet = "ab/-_.0é€😀"   # 1 to 4 UTF-8 bytes a character: clipping cuts inside some
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, longest)))


def test_the_encoder_matches_the_reference_for_long_odd_and_out_of_range_values() -> None:
    rng = random.Random(5)
    for _ in range(400):
        members = tuple(
            identity.Membership(random_text(rng, 70), random_text(rng, 70),
                                rng.choice([0, 7, -1, 2**32 + 5]), rng.random() < 0.5,
                                tuple((random_text(rng, 70), rng.random() * 100)
                                      for _ in range(rng.randint(0, 10))))
            for _ in range(rng.randint(0, 18)))
        state = VisitorState(
            visitor_id=f"{rng.getrandbits(128):032x}",
            first_seen=rng.choice([0, int(NOW), -5, 2**33]), visit_start=int(NOW),
            last_seen=rng.choice([int(NOW), 2**32]), previous_visit_end=rng.choice([0, -1]),
            visit_number=rng.choice([1, 7, 2**40]), visit_pages=rng.choice([1, -3, 70_000]),
            landing_page=random_text(rng, 260), stage=random_text(rng, 50),
            entry_source=random_text(rng, 50), entry_campaign=random_text(rng, 80),
            interests=tuple((random_text(rng, 50), rng.choice([1, -2, 70_000]))
                            for _ in range(rng.randint(0, 3))),
            opted_out=rng.random() < 0.1, experiments=members)
        secrets: list[str | bytes] = [KEY, b"bytes-key", "k" * 100]
        secret = rng.choice(secrets)
        assert encode(state, secret) == reference_encode(state, secret)


@pytest.mark.parametrize("text", ["\ud800", "\ud800" * 300])
def test_lone_surrogates_are_refused_or_clipped_as_before(text: str) -> None:
    """Within the limit a lone surrogate cannot be encoded (UnicodeEncodeError, as ever);
    past it the clipped text has a '?' in its place."""
    state = full_state(landing_page=text)
    try:
        expected: str | type[Exception] = reference_encode(state, KEY)
    except UnicodeEncodeError:
        expected = UnicodeEncodeError
    if expected is UnicodeEncodeError:
        with pytest.raises(UnicodeEncodeError):
            encode(state, KEY)
    else:
        assert encode(state, KEY) == expected


def test_decode_takes_the_standard_alphabet_too_as_before() -> None:
    standard = GOOD.replace("-", "+").replace("_", "/")
    assert decode(standard, (KEY,), NOW) == decode(GOOD, (KEY,), NOW) == full_state()
    assert decode(GOOD + "é", (KEY,), NOW) is None   # not ASCII: not base64


# -- visitor ids ---------------------------------------------------------------------------

def test_visitor_ids_are_128_random_bits_never_handed_out_twice() -> None:
    ids = [identity.new_visitor_id() for _ in range(3 * identity._IDS_PER_DRAW + 7)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 and i == i.lower() for i in ids)


def test_a_forked_child_does_not_hand_out_its_parents_ids() -> None:
    """Ids are drawn in batches: a worker forked after its parent drew must not repeat the
    parent's next ids. (A fresh interpreter: forking the test process is not safe.)"""
    import subprocess
    import sys

    script = (
        "import os, sys\n"
        "from proxy.context import identity\n"
        "identity.new_visitor_id()\n"
        "read, write = os.pipe()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.write(write, identity.new_visitor_id().encode()); os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "child = os.read(read, 64).decode()\n"
        "parent = identity.new_visitor_id()\n"
        "print(child, parent)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, timeout=60)
    child, parent = done.stdout.split()
    assert len(child) == len(parent) == 32 and child != parent


def test_memberships_joined_at_once_are_those_joined_one_by_one() -> None:
    from proxy.context.identity import Membership, with_membership, with_memberships

    rng = random.Random(8)
    names = [f"e{i}" for i in range(24)]
    for _ in range(300):
        state = full_state(experiments=tuple(
            Membership(n, "a", 1) for n in rng.sample(names, rng.randint(0, 16))))
        joining = tuple(Membership(n, "b", 2, True) for n in rng.sample(names,
                                                                          rng.randint(1, 20)))
        one_by_one = state
        for member in joining:
            one_by_one = with_membership(one_by_one, member)
        assert with_memberships(state, joining) == one_by_one
