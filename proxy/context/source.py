"""Traffic source: where this request came from, from its Referer and its URL's query.

Precedence, most explicit first (close to Google Analytics' default channel grouping):

1. an ad click id in the URL (``gclid``, ``msclkid``, ...) → ``paid``;
2. ``utm_medium`` (``cpc`` → paid, ``newsletter`` → email, ``partner`` → affiliate, ...);
3. the Referer host: the site itself → ``internal``; a known search engine, social
   network or webmail host → ``search`` / ``social`` / ``email``; any other → ``other``;
4. a platform's link id without a referrer (``fbclid`` → social/facebook);
5. a bare ``utm_source`` naming a known entry (``facebook`` → social), else ``other``;
6. nothing at all → ``direct``.

Search terms come from the referrer's query where the engine still sends one (Bing ``q``,
Yahoo ``p``, Yandex ``text``, Baidu ``wd``; Google almost never) and otherwise from
``utm_term``. The tables are data: :mod:`proxy.context.sourcetable`.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from proxy.context.sourcetable import HostEntry, SourceTable

MAX_URL_CHARS = 2048  # longer referrers and query strings are cut before parsing
MAX_VALUE_CHARS = 100
CACHE_SIZE = 4096
MAX_CACHED_CHARS = 512
UTM_KEYS = ("source", "medium", "campaign", "term", "content", "id")
_TLD_SECOND = {"co", "com", "net", "org", "ac", "gov", "edu", "ne", "or", "go", "gob"}


@dataclass(frozen=True, slots=True)
class Source:
    """How the visitor got to this page. ``cls`` is exposed to rules as ``source.class``."""

    cls: str = "direct"  # search, social, email, paid, affiliate, internal, direct, other
    name: str = ""  # engine, network, mail provider, ad network or referrer host
    term: str = ""  # search term, when the referrer or utm_term has one
    medium: str = ""  # utm_medium, lower-cased
    campaign: str = ""  # utm_campaign
    referrer_host: str = ""
    click_id: str = ""  # the parameter that marked it paid ("gclid"), not its value
    utm: tuple[tuple[str, str], ...] = ()  # every utm_* parameter (without the prefix)

    @property
    def engine(self) -> str:
        return self.name if self.cls == "search" else ""

    def utm_value(self, key: str) -> str:
        for name, value in self.utm:
            if name == key:
                return value
        return ""

    @property
    def label(self) -> str:
        """``class/name``: what the visitor state remembers as the visit's entry source."""
        return f"{self.cls}/{self.name}" if self.name else self.cls


DIRECT = Source()


def classify_source(referer: str, query_string: str, host: str, table: SourceTable) -> Source:
    """Classify one request (pure; never raises). ``host`` is the site's own host.

    Results are memoised per table (FIFO, 4,096 entries, short inputs only): most
    requests repeat a referrer such as ``https://www.google.com/`` or an internal page.
    """
    if not referer and not query_string:
        return DIRECT
    cacheable = len(referer) + len(query_string) <= MAX_CACHED_CHARS
    if cacheable:
        found = table.cache.get((referer, query_string, host))
        if found is not None:
            return found
    result = _classify(referer, query_string, host, table)
    if cacheable:
        cache = table.cache
        if len(cache) >= CACHE_SIZE:
            # popitem, not del cache[next(iter(cache))]: a dict scans the slots freed by
            # earlier deletions every time (~5 µs per eviction when full), an OrderedDict does not
            with suppress(KeyError):  # emptied meanwhile by another thread
                cache.popitem(last=False)
        cache[(referer, query_string, host)] = result
    return result


def _classify(referer: str, query_string: str, host: str, table: SourceTable) -> Source:
    params = _query(query_string) if query_string else {}
    ref_host, ref_query = _referrer(referer) if referer else ("", "")
    utm = tuple(sorted((k[4:], v) for k, v in params.items() if k.startswith("utm_")))[:12]
    medium = params.get("utm_medium", "").lower()
    campaign = params.get("utm_campaign", "")
    utm_source = params.get("utm_source", "")
    term = params.get("utm_term", "")

    def make(cls: str, name: str, **extra: str) -> Source:
        return Source(cls=cls, name=name[:MAX_VALUE_CHARS], term=extra.get("term", term),
                      medium=medium, campaign=campaign, referrer_host=ref_host,
                      click_id=extra.get("click_id", ""), utm=utm)

    entry = _host_entry(ref_host, table) if ref_host else None
    for param, network in table.click_ids.items():
        if param in params:
            return make("paid", network, click_id=param)
    if medium and medium in table.mediums:
        cls = table.mediums[medium]
        name = utm_source or (entry.name if entry else ref_host)
        return make(cls, name, term=_term(entry, ref_query) or term)
    if ref_host:
        if _same_site(ref_host, host):
            return make("internal", ref_host)
        if entry is not None:
            return make(entry.cls, entry.name, term=_term(entry, ref_query) or term)
        if not utm_source:
            return make("other", ref_host)
    for param, (cls, name) in table.link_ids.items():
        if param in params and not ref_host:
            return make(cls, name)
    if utm_source:
        key = utm_source.lower()
        return make(table.by_name.get(key) or table.mediums.get(key) or "other", utm_source)
    if medium:
        return make("other", "")
    return DIRECT if not params else make("direct", "")


def _query(query_string: str) -> dict[str, str]:
    """First value of each parameter, names lower-cased, values trimmed and bounded."""
    found: dict[str, str] = {}
    for key, value in parse_qsl(query_string[:MAX_URL_CHARS], keep_blank_values=False):
        name = key.lower()
        if name not in found:
            found[name] = _clean(value)
    return found


def _referrer(referer: str) -> tuple[str, str]:
    try:
        parts = urlsplit(referer.strip()[:MAX_URL_CHARS])
        host = parts.hostname or ""
    except ValueError:  # "http://[::1" and the like
        return "", ""
    if parts.scheme not in ("http", "https", "android-app"):
        return "", ""
    return host.rstrip("."), parts.query


def _host_entry(host: str, table: SourceTable) -> HostEntry | None:
    """The longest table key matching ``host``: an exact host or one of its parents, or a
    ``name.*`` key where what follows ``name`` looks like a top-level domain."""
    labels = host.split(".")
    for i in range(len(labels)):
        entry = table.hosts.get(".".join(labels[i:]))
        if entry is not None:
            return entry
        rest = labels[i + 1:]
        if table.wildcard_hosts and _looks_like_tld(rest):
            entry = table.wildcard_hosts.get(labels[i])
            if entry is not None:
                return entry
    return None


def _looks_like_tld(labels: list[str]) -> bool:
    if len(labels) == 1:
        return labels[0].isalpha() and 2 <= len(labels[0]) <= 12
    if len(labels) == 2:
        return labels[0] in _TLD_SECOND and labels[1].isalpha() and len(labels[1]) == 2
    return False


def _term(entry: HostEntry | None, ref_query: str) -> str:
    if entry is None or not entry.params or not ref_query:
        return ""
    params = _query(ref_query)
    for name in entry.params:
        if params.get(name):
            return params[name]
    return ""


def _same_site(ref_host: str, host: str) -> bool:
    """Same host, ignoring a port and a leading "www." on either side."""
    host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    host = host.lower().removeprefix("www.")
    return ref_host.removeprefix("www.") == host


def _clean(value: str) -> str:
    value = value.strip()[:MAX_VALUE_CHARS]
    return value if value.isprintable() else "".join(c for c in value if c.isprintable())
