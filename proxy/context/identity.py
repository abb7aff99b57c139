"""The first-party visitor cookie: the only module that knows its format.

Why a signed cookie and not a server-side profile: the profile is read on every request,
so it must cost no I/O; and a visitor who deletes the cookie is really forgotten.

Format (version 1): ``base64url(payload || tag)`` without padding, where ``payload`` is

====  =====================================================================
u8    version (1)
u8    flags (bit 0: opted out)
16 B  visitor id (128 random bits from :mod:`secrets`)
u32   first seen, visit start, last seen, end of previous visit (Unix s, 0 = none)
u32   visit number
u16   pages viewed this visit
str   landing page of this visit (u8 length + UTF-8, at most 200 bytes, path only: a query
      string can carry e-mail addresses or tokens), furthest journey stage, entry source,
      entry campaign
u8    number of interests, then per interest: str name, u16 count
u8    (optional, absent in older cookies) number of experiment memberships, then per
      membership: str experiment, str arm, u32 salt tag, u8 flags (bit 0: exposure
      counted), u8 number of goals, then per goal: str goal, f64 total counted so far
====  =====================================================================

and ``tag`` is HMAC-SHA256(secret, "kairos-visitor\\0" || payload) truncated to 16 bytes
(128 bits, ample against forgery; the prefix keeps a tag from being valid for any other
use of the same secret). A typical cookie is 100-200 characters. Secrets rotate: the first
signs, every one verifies, so a new secret can be put first and the old one dropped 13
months later.
"""

from __future__ import annotations

import binascii
import hmac
import os
import struct
from collections import deque
from dataclasses import dataclass
from functools import lru_cache

from proxy.context.journey import Counts, count_interests, furthest, interests_for, stage_for
from proxy.context.settings import ContextSettings
from proxy.signing import PrefixedMac, b64
from proxy.values import quick_init

VERSION = 1
MAX_COOKIE_CHARS = 4096  # browsers drop larger cookies; anything larger is not ours
MAX_AGE_DAYS = 395  # 13 months, the longest a consent-free analytics cookie may live (CNIL)
CLOCK_SKEW = 86_400  # a cookie "from the future" by more than this is refused
TAG_BYTES = 16
_HEAD = struct.Struct(">BB16sIIIIIH")
_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_LIMITS = {"landing_page": 200, "stage": 40, "entry_source": 40, "entry_campaign": 64}
_LANDING_LIMIT, _STAGE_LIMIT, _SOURCE_LIMIT, _CAMPAIGN_LIMIT = _LIMITS.values()
# A length prefix (u8) by indexing rather than struct.pack: a method call per string saved.
_LENGTH_BYTE = tuple(bytes((n,)) for n in range(256))
# Experiment, arm and goal names are at most 64 characters (experiments.model); clipping one
# would make it miss its experiment, and the visitor would be counted on every page.
_MEMBER_NAME_LIMIT = 64
_NAME_LIMIT = 40
_OPTED_OUT_ID = "0" * 32
_F64 = struct.Struct(">d")
_MEMBER = struct.Struct(">IBB")
MAX_MEMBERSHIPS = 16   # bounds the cookie; the oldest membership gives way to a new one
MAX_GOALS = 8
_TAG_PREFIX = b"kairos-visitor\0"
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


@dataclass(frozen=True, slots=True)
class Membership:
    """One experiment a visitor was assigned to: the sticky arm and what was counted.

    Deduplication lives here, not in Redis: an exposure is counted once (``exposed``), a
    conversion once per goal, and ``goals`` keeps the per-visitor running total so that
    revenue variances are computed over visitor totals.
    """

    experiment: str
    arm: str
    salt_tag: int          # CRC-32 of the salt the arm was drawn under; a new salt reassigns
    exposed: bool = False
    goals: tuple[tuple[str, float], ...] = ()

    def total(self, goal: str) -> float | None:
        for name, value in self.goals:
            if name == goal:
                return value
        return None


@quick_init
@dataclass(frozen=True, slots=True)
class VisitorState:
    """What the cookie remembers about one browser. Times are Unix seconds."""

    visitor_id: str  # 32 hex digits
    first_seen: int
    visit_start: int
    last_seen: int
    previous_visit_end: int = 0  # last_seen of the previous visit, 0 on the first visit
    visit_number: int = 1
    visit_pages: int = 1
    landing_page: str = ""
    stage: str = ""  # furthest journey stage reached
    entry_source: str = ""  # "class/name" of the request that started this visit
    entry_campaign: str = ""
    interests: Counts = ()
    opted_out: bool = False
    experiments: tuple[Membership, ...] = ()

    def membership(self, experiment: str) -> Membership | None:
        for member in self.experiments:
            if member.experiment == experiment:
                return member
        return None

    @property
    def returning(self) -> bool:
        return self.visit_number > 1

    @property
    def days_since_last_visit(self) -> int | None:
        """Whole days between the previous visit's end and this visit; None on the first."""
        if not self.previous_visit_end:
            return None
        return max(0, self.visit_start - self.previous_visit_end) // 86_400

    @property
    def days_since_first_visit(self) -> int:
        return max(0, self.last_seen - self.first_seen) // 86_400


_ID_BYTES = 16
_IDS_PER_DRAW = 256
_unused_ids: deque[str] = deque()


def new_visitor_id() -> str:
    """128 random bits as 32 hex digits, from os.urandom (the kernel's CSPRNG, which
    secrets.token_hex reads too).

    Drawn 256 ids at a time: one getrandom() system call per new visitor cost ~1.4% of a page
    view. Drawing ahead takes nothing from unpredictability (the bytes are the same CSPRNG's,
    only read earlier, and never derived from one another), and every id is still handed out
    once: ``deque.popleft`` is atomic, so two threads cannot take the same one, and a forked
    child forgets the ids its parent drew (:func:`_forget_unused_ids`), else both processes
    would hand out the same ones.
    """
    while True:
        try:
            return _unused_ids.popleft()
        except IndexError:
            digits = os.urandom(_ID_BYTES * _IDS_PER_DRAW).hex()
            width = 2 * _ID_BYTES
            _unused_ids.extend(digits[i:i + width] for i in range(0, len(digits), width))


def _forget_unused_ids() -> None:
    _unused_ids.clear()


if hasattr(os, "register_at_fork"):   # POSIX; elsewhere processes are never forked
    os.register_at_fork(after_in_child=_forget_unused_ids)


def advance(
    state: VisitorState | None,
    now: float,
    path: str,
    settings: ContextSettings,
    *,
    entry_source: str = "",
    entry_campaign: str = "",
) -> VisitorState:
    """The state after one more page view at ``path``.

    ``None`` starts a new visitor. After ``settings.visit_timeout_minutes`` without a page
    view a new visit starts: its number goes up, its page count, landing page and entry
    source start again. An opted-out state is returned unchanged: nothing is tracked.
    """
    t = int(now)
    stage = stage_for(path, settings)
    seen = interests_for(path, settings)
    if state is None:   # positional: keywords cost a few hundred ns on every new visitor
        return VisitorState(
            new_visitor_id(), t, t, t, 0, 1, 1, _clip(path, "landing_page"), stage,
            _clip(entry_source, "entry_source"), _clip(entry_campaign, "entry_campaign"),
            count_interests((), seen, settings.interest_slots), False, (),
        )
    if state.opted_out:
        return state
    counts = count_interests(state.interests, seen, settings.interest_slots)
    reached = furthest(state.stage, stage, settings)
    if t - state.last_seen > settings.visit_timeout_minutes * 60:
        return VisitorState(
            state.visitor_id, state.first_seen, t, t, state.last_seen,
            min(state.visit_number + 1, 0xFFFFFFFF), 1, _clip(path, "landing_page"), reached,
            _clip(entry_source, "entry_source"), _clip(entry_campaign, "entry_campaign"),
            counts, False, state.experiments,
        )
    # positional: dataclasses.replace() costs several µs on this path
    return VisitorState(
        state.visitor_id, state.first_seen, state.visit_start, max(state.last_seen, t),
        state.previous_visit_end, state.visit_number, min(state.visit_pages + 1, 0xFFFF),
        state.landing_page, reached, state.entry_source, state.entry_campaign, counts, False,
        state.experiments,
    )


def with_membership(state: VisitorState, member: Membership) -> VisitorState:
    """``state`` with ``member`` replacing any earlier one for the same experiment, newest
    last; past :data:`MAX_MEMBERSHIPS` the oldest is forgotten."""
    kept = tuple(m for m in state.experiments if m.experiment != member.experiment)
    return _with_experiments(state, (*kept, member)[-MAX_MEMBERSHIPS:])


def with_memberships(state: VisitorState, members: tuple[Membership, ...]) -> VisitorState:
    """:func:`with_membership` of each of ``members`` (of distinct experiments) in turn,
    with one new state rather than one per member: a page with many experiments exposes a
    new visitor to all of them at once. (Forgetting the oldest at each step or once at the
    end leaves the same newest :data:`MAX_MEMBERSHIPS`.)"""
    if len(members) == 1:
        return with_membership(state, members[0])
    joining = {m.experiment for m in members}
    kept = tuple(m for m in state.experiments if m.experiment not in joining)
    return _with_experiments(state, (*kept, *members)[-MAX_MEMBERSHIPS:])


def _with_experiments(state: VisitorState, experiments: tuple[Membership, ...]
                      ) -> VisitorState:
    return VisitorState(
        state.visitor_id, state.first_seen, state.visit_start, state.last_seen,
        state.previous_visit_end, state.visit_number, state.visit_pages, state.landing_page,
        state.stage, state.entry_source, state.entry_campaign, state.interests,
        state.opted_out, experiments,
    )


def without_membership(state: VisitorState, experiment: str) -> VisitorState:
    """``state`` without ``experiment``'s membership (an assignment that was never shown)."""
    kept = tuple(m for m in state.experiments if m.experiment != experiment)
    if len(kept) == len(state.experiments):
        return state
    return VisitorState(
        state.visitor_id, state.first_seen, state.visit_start, state.last_seen,
        state.previous_visit_end, state.visit_number, state.visit_pages, state.landing_page,
        state.stage, state.entry_source, state.entry_campaign, state.interests,
        state.opted_out, kept,
    )


def opt_out(now: float) -> VisitorState:
    """A state that remembers only the opt-out: no id (all zeros), no history."""
    t = int(now)
    return VisitorState(visitor_id=_OPTED_OUT_ID, first_seen=t, visit_start=t, last_seen=t,
                        opted_out=True)


def encode(state: VisitorState, secret: str | bytes) -> str:
    """The cookie value for ``state``, signed with ``secret``."""
    # The four strings in _LIMITS order, written out: zip() over an attrgetter's tuple cost
    # ~10% of an encode.
    parts = [_head(state), _packed(state.landing_page, _LANDING_LIMIT),
             _packed(state.stage, _STAGE_LIMIT), _packed(state.entry_source, _SOURCE_LIMIT),
             _packed(state.entry_campaign, _CAMPAIGN_LIMIT)]
    interests = state.interests[:255]
    parts.append(_LENGTH_BYTE[len(interests)])
    for name, count in interests:
        parts.append(_packed(name, _NAME_LIMIT))
        parts.append(_u16(count))
    if state.experiments:
        parts.append(_pack_memberships(state.experiments[-MAX_MEMBERSHIPS:]))
    payload = b"".join(parts)
    return b64(payload + _signer(secret).digest(payload)[:TAG_BYTES])


def _head(state: VisitorState) -> bytes:
    fields = (state.first_seen, state.visit_start, state.last_seen, state.previous_visit_end,
              state.visit_number)
    flags = 1 if state.opted_out else 0
    visitor_id = bytes.fromhex(state.visitor_id)
    try:   # the common case: every number already fits its field
        return _HEAD.pack(VERSION, flags, visitor_id, *fields, state.visit_pages)
    except struct.error:   # out of range (or not an int): clamped to the field, as always
        return _HEAD.pack(VERSION, flags, visitor_id, *map(_u32, fields),
                          min(max(state.visit_pages, 0), 0xFFFF))


def _u16(count: int) -> bytes:
    try:
        return _U16.pack(count)
    except struct.error:
        return _U16.pack(min(max(count, 0), 0xFFFF))


def decode(
    cookie_value: str | None,
    secrets: tuple[str | bytes, ...],
    now: float,
    *,
    max_age_days: int = MAX_AGE_DAYS,
) -> VisitorState | None:
    """The state in a cookie value, or None if it is missing, forged, oversized (> 4 KB),
    malformed, of an unknown version or expired (not seen for ``max_age_days``). Never
    raises: a bad cookie just means a new visitor."""
    if (not cookie_value or not isinstance(cookie_value, str)
            or len(cookie_value) > MAX_COOKIE_CHARS):
        return None
    text = cookie_value.strip().strip('"')
    try:   # base64.b64decode(..., altchars=b"-_", validate=True) without its Python layers
        raw = binascii.a2b_base64((text + "=" * (-len(text) % 4)).encode("ascii").translate(
            _FROM_URLSAFE), strict_mode=True)
    except ValueError:   # binascii.Error, or UnicodeEncodeError for a non-ASCII character
        return None
    if len(raw) <= _HEAD.size + TAG_BYTES:
        return None
    payload, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
    if not any(hmac.compare_digest(_tag(_key(s), payload), tag) for s in secrets):
        return None
    try:   # IndexError: a length byte past the end (read as payload[at], not with struct)
        state = _parse(payload)
    except (struct.error, UnicodeDecodeError, ValueError, IndexError):
        return None
    if state is None:
        return None
    t = int(now)
    if t - state.last_seen > max_age_days * 86_400 or state.last_seen - t > CLOCK_SKEW:
        return None
    return state


def _parse(payload: bytes) -> VisitorState | None:
    (version, flags, vid, first, start, last, previous, number, pages) = _HEAD.unpack_from(
        payload, 0)
    if version != VERSION:
        return None
    at = _HEAD.size
    landing_page, at = _read_str(payload, at)   # the strings in _LIMITS order
    stage, at = _read_str(payload, at)
    entry_source, at = _read_str(payload, at)
    entry_campaign, at = _read_str(payload, at)
    n = payload[at]
    at += 1
    interests = []
    for _ in range(n):
        name, at = _read_str(payload, at)
        (count,) = _U16.unpack_from(payload, at)
        at += 2
        interests.append((name, count))
    memberships: tuple[Membership, ...] = ()
    if at < len(payload):
        memberships, at = _read_memberships(payload, at)
    if at != len(payload) or not first <= start <= last or number < 1:
        return None
    return VisitorState(vid.hex(), first, start, last, previous, number, pages, landing_page,
                        stage, entry_source, entry_campaign, tuple(interests), bool(flags & 1),
                        memberships)


def _pack_memberships(members: tuple[Membership, ...]) -> bytes:
    parts = [_LENGTH_BYTE[len(members)]]
    append = parts.append
    for m in members:
        goals = m.goals[:MAX_GOALS]
        append(_packed_name(m.experiment))
        append(_packed_name(m.arm))
        append(_MEMBER.pack(m.salt_tag & 0xFFFFFFFF, 1 if m.exposed else 0, len(goals)))
        for goal, total in goals:
            append(_packed_name(goal))
            append(_F64.pack(total))
    return b"".join(parts)


def _read_memberships(payload: bytes, at: int) -> tuple[tuple[Membership, ...], int]:
    count = payload[at]
    if count == 0:   # the encoder writes the section only when it has members
        raise ValueError("empty membership section")
    at += 1
    members = []
    for _ in range(count):
        experiment, at = _read_str(payload, at)
        arm, at = _read_str(payload, at)
        salt_tag, flags, n_goals = _MEMBER.unpack_from(payload, at)
        at += _MEMBER.size
        goals = []
        for _ in range(n_goals):
            goal, at = _read_str(payload, at)
            (total,) = _F64.unpack_from(payload, at)
            at += _F64.size
            goals.append((goal, total))
        members.append(Membership(experiment, arm, salt_tag, bool(flags & 1), tuple(goals)))
    return tuple(members), at


def _read_str(data: bytes, at: int) -> tuple[str, int]:
    end = at + 1 + data[at]
    if end > len(data):
        raise ValueError("truncated")
    return data[at + 1:end].decode("utf-8"), end


def _pack_str(text: str) -> bytes:
    data = text.encode("utf-8")
    return _U8.pack(len(data)) + data


def _packed(text: str, limit: int) -> bytes:
    """``_pack_str(_clip_to(text, limit))`` with one encoding in the common case."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:   # lone surrogates: clipped (or refused) exactly as always
        return _pack_str(_clip_to(text, limit))
    if len(data) > limit:
        data = data[:limit].decode("utf-8", "ignore").encode("utf-8")
    return _LENGTH_BYTE[len(data)] + data


@lru_cache(maxsize=512)
def _packed_name(text: str) -> bytes:
    """``_pack_str(_clip_name(text))``; experiment, arm and goal names are few and repeat on
    every page view, so each is packed once."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        return _pack_str(_clip_name(text))
    if len(data) > _MEMBER_NAME_LIMIT:
        data = data[:_MEMBER_NAME_LIMIT].decode("utf-8", "ignore").encode("utf-8")
    return _U8.pack(len(data)) + data


def _clip_name(text: str) -> str:
    return text.encode("utf-8", "replace")[:_MEMBER_NAME_LIMIT].decode("utf-8", "ignore")


def _clip(text: str, field_name: str | None) -> str:
    limit = _LIMITS.get(field_name, _NAME_LIMIT) if field_name else _NAME_LIMIT
    return _clip_to(text, limit)


def _clip_to(text: str, limit: int) -> str:
    if len(text) * 4 <= limit:   # UTF-8 takes at most 4 bytes a character: nothing to cut
        return text
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


def _u32(value: int) -> int:
    return min(max(int(value), 0), 0xFFFFFFFF)


def _key(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


@lru_cache(maxsize=16)
def _mac(key: bytes) -> PrefixedMac:
    """Keyed once per secret: every page view signs a cookie."""
    return PrefixedMac(key, _TAG_PREFIX)


@lru_cache(maxsize=16)
def _signer(secret: str | bytes) -> PrefixedMac:
    """:func:`_mac` by the secret as configured: encoding the secret and hashing the bytes
    again on every page view cost more than this lookup (the str's hash is cached)."""
    return _mac(_key(secret))


def _tag(key: bytes, payload: bytes) -> bytes:
    return _mac(key).digest(payload)[:TAG_BYTES]


# -- HTTP ----------------------------------------------------------------------------------

def set_cookie_header(name: str, value: str, *, scheme: str, max_age_days: int = MAX_AGE_DAYS
                      ) -> str:
    """The Set-Cookie value: ``HttpOnly`` (no script needs it), ``SameSite=Lax`` (sent on
    top-level navigation from other sites, so a visitor arriving from Google is
    recognised), ``Path=/``, ``Secure`` when the visitor's scheme is https, and a Max-Age
    of at most 13 months."""
    before, after = _set_cookie_parts(name, scheme, max_age_days)
    return f"{before}{value}{after}"


@lru_cache(maxsize=64)   # a few names and schemes, one per page view with a cookie to set
def _set_cookie_parts(name: str, scheme: str, max_age_days: int) -> tuple[str, str]:
    days = min(max(int(max_age_days), 1), MAX_AGE_DAYS)
    secure = "; Secure" if scheme.lower() == "https" else ""
    return f"{name}=", f"; Path=/; Max-Age={days * 86_400}; HttpOnly; SameSite=Lax{secure}"


def expire_cookie_header(name: str, *, scheme: str) -> str:
    """The Set-Cookie value that deletes the cookie ("forget me")."""
    secure = "; Secure" if scheme.lower() == "https" else ""
    return f"{name}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax{secure}"


def read_cookie(cookie_header: str, name: str) -> str | None:
    """The value of cookie ``name`` in a Cookie request header (the first one wins)."""
    if not cookie_header or name not in cookie_header:
        return None
    for part in cookie_header.split(";"):
        key, sep, value = part.partition("=")
        if sep and key.strip() == name:
            return value.strip()
    return None
