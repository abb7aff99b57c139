"""Country, region, city, continent and time zone of the visitor's IP address.

The database is a MaxMind GeoIP2/GeoLite2 City file (``context.geo_database``), opened
once per process with ``MODE_AUTO``: the ``maxminddb`` C extension with mmap when it is
installed, pure Python otherwise. Records are read with ``maxminddb`` directly rather than
through ``geoip2``'s model objects, which build a dozen objects per lookup the context never
reads. Without a configured file the GeoLite2 City file shipped inside the PyPI package
``python-geoip-geolite2`` is used, with one warning: it dates from 2015, so countries are
mostly right and cities often wrong.

Behind a CDN the CDN knows the location better (it sees the real client): its geo headers
(``CF-IPCountry``, ``CloudFront-Viewer-Country``, ``X-Vercel-IP-City``, ...) are used, but
ONLY when the proxy says the peer is trusted — anyone can send these headers.

Privacy: the IP address is looked up in memory and neither kept nor logged here. Answers
are cached per IPv4 /24 network (only when the database's network covers the whole /24,
so the answer is the same for every address in it): the cache holds truncated addresses,
like analytics tools' "IP anonymisation", and saves the ~16 µs a City record costs to
decode (its place names come in eight languages). A miss,
a private address or a malformed one gives an empty :class:`Geo`; nothing here raises on
the request path.

A /24 not seen before often lies in a network seen before: most addresses lie in networks
larger than /24 (a /17 on average in GeoLite2 2015), so those networks are remembered too,
by prefix (never a whole address), and a new /24 inside one costs one dictionary read per
prefix length in use (~16) instead of a decode: ~3 in 4 new /24s of
bench/personalised.lua's traffic (neighbouring /24s), ~1 in 3 of scattered ones.

Past both, the address's network is new but its record often is not: many networks share
one record (a country's without a city, a big city's), and 100,000 random addresses lie in
~10,300 of the 2015 file's records. So the reader first asks libmaxminddb WHICH record holds
the address (:mod:`proxy.context.mmdb_records`: ``maxminddb``'s own C function through
``ctypes`` on the reader's own handle, as ``maxminddb`` has no API for it; ~13,000
instructions against ~97,000 for a decode), and keeps the Geo of the last 10,000 records by
their position in the file, so only a record not seen lately is decoded, by ``maxminddb``
as before (the same answer by construction). When that cannot be used (no C extension, a
build or layout other than the one checked, a file that is not a City one, anything
unexpected at open) every such address is decoded, as before, and one info line says why.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import socket
from collections import OrderedDict
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import maxminddb

from proxy.context.mmdb_records import FileFacts, Found, RecordFinder, Unavailable, open_finder
from proxy.values import quick_init

log = logging.getLogger(__name__)

BUNDLED_PACKAGE = "_geoip_geolite2"  # the module python-geoip-geolite2 installs
BUNDLED_FILE = "GeoLite2-City.mmdb"
CACHE_SIZE = 10_000  # /24 networks, not addresses
NETWORKS_PER_LENGTH = 1_000  # larger networks remembered, per prefix length (/8 ... /23)
# Decoded records by their offset in the file, least recently used dropped first. 100,000
# addresses (random, or bench/hot_view.py's) lie in ~10,300 records of the 2015 GeoLite2 City
# file; kept this way 2,000 records answer ~80% of the lookups that reach them, 10,000 ~88%
# (all but each record's first). ~0.6 KB a record (Geo, strings, entry): ~6 MB when full,
# partly paid back as the caches above share these Geo objects instead of one per network.
RECORD_CACHE_SIZE = 10_000

# Lower-case header names, most specific first within each field.
CDN_HEADERS: Mapping[str, tuple[str, ...]] = {
    "country": ("cf-ipcountry", "cloudfront-viewer-country", "x-vercel-ip-country",
                "x-appengine-country", "fastly-geo-country"),
    "region": ("x-vercel-ip-country-region", "cloudfront-viewer-country-region",
               "cf-region-code", "x-appengine-region"),
    "city": ("x-vercel-ip-city", "cloudfront-viewer-city", "cf-ipcity", "x-appengine-city"),
    "continent": ("cf-ipcontinent", "x-vercel-ip-continent"),
    "time_zone": ("x-vercel-ip-timezone", "cloudfront-viewer-time-zone", "cf-timezone"),
}
CDN_HEADER_NAMES = frozenset(h for names in CDN_HEADERS.values() for h in names)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
# What ipaddress.IPv4Address accepts: four decimal octets 0-255, ASCII digits, no leading
# zeros ("010.1.1.1" is refused, never read as octal), nothing before or after.
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
_OCTETS = frozenset(str(n) for n in range(256))  # what _OCTET matches
_COUNTRY = re.compile(r"[A-Z]{2}")
_ZONE = re.compile(r"[A-Za-z][A-Za-z0-9_+\-/]{1,63}")
_NOT_COUNTRIES = {"XX", "T1", "A1", "A2", "O1", "EU", "AP"}  # unknown, Tor, proxies, blocs


@quick_init
@dataclass(frozen=True, slots=True)
class Geo:
    """Where the visitor is. Empty strings when unknown; ``source`` says where it came from."""

    country: str = ""  # ISO 3166-1 alpha-2, "GB"
    country_name: str = ""
    region: str = ""  # ISO 3166-2 subdivision code without the country, "ENG", "BE"
    region_name: str = ""
    city: str = ""
    continent: str = ""  # "EU", "NA", ...
    time_zone: str = ""  # IANA, "Europe/London"
    source: str = ""  # "database", "cdn" or ""


EMPTY_GEO = Geo()


# (the maxminddb reader, what its file is) -> a finder, or Unavailable saying why not
FindRecords = Callable[[Any, FileFacts], RecordFinder]


class GeoReader:
    """An open City database; share one per process (read-only; lookups may come from any
    thread, but the proxy makes them on its event loop only, and ``close`` must come after
    the last one).

    ``find_records`` opens the record finder on the reader (see the module docstring); None
    decodes every address no cache answers, as readers did before it.
    """

    def __init__(self, path: str | Path, *,
                 find_records: FindRecords | None = open_finder) -> None:
        self.path = str(path)
        self._mmdb_reader = maxminddb.open_database(self.path, maxminddb.MODE_AUTO)
        meta = self._mmdb_reader.metadata()
        self.database_type = str(meta.database_type)
        self.build_epoch = int(meta.build_epoch)
        self._cache: OrderedDict[str, Geo] = OrderedDict()
        # Networks larger than /24: per prefix length, their prefixes (oldest first); and the
        # same tables as (24 - length, table) pairs, for the lookup
        self._networks: dict[int, OrderedDict[int, Geo]] = {}
        self._network_tables: tuple[tuple[int, OrderedDict[int, Geo]], ...] = ()
        self._decoded: OrderedDict[int, Geo] = OrderedDict()  # by record offset
        self._records: RecordFinder | None = None
        if find_records is not None:
            self._records = self._open_records(find_records, meta)

    def _open_records(self, find_records: FindRecords, meta: Any) -> RecordFinder | None:
        """The record finder on this reader, or None with the reason logged (once)."""
        if "City" not in self.database_type:
            _explain(f"{self.path} is a {self.database_type!r} database, not a City one "
                     "(GeoIP2-City, GeoLite2-City, ...)")
            return None
        try:
            facts = FileFacts(os.stat(self.path).st_size, int(meta.node_count),
                              int(meta.record_size), int(meta.ip_version), self.build_epoch)
            return find_records(self._mmdb_reader, facts)
        except Unavailable as exc:
            _explain(str(exc))
        except Exception as exc:  # anything at all: this reader must work without it
            _explain(f"{type(exc).__name__}: {exc}")
        return None

    # The reader is replaceable (the tests wrap it to count decodes); whatever replaces it is
    # asked about every address: the record finder borrowed the handle of the reader it
    # replaces, and the record cache stands in for that reader only.
    @property
    def _reader(self) -> Any:
        return self._mmdb_reader

    @_reader.setter
    def _reader(self, reader: Any) -> None:
        self._mmdb_reader = reader
        self._records = None
        self._decoded.clear()

    def lookup(self, ip: str) -> Geo:
        """The location of ``ip``; the empty Geo on a miss or a malformed address."""
        if not ip:
            return EMPTY_GEO
        key, _, last = ip.rpartition(".")  # a dotted quad's /24 ("a.b.c") and last octet
        cached = self._cache.get(key)
        if cached is not None and last in _OCTETS:
            # Keys only come from well-formed addresses, so only the last octet is left to
            # check (a set lookup, not the whole pattern: this runs on every view).
            try:  # noqa: SIM105 (not suppress(): a try costs nothing)
                self._cache.move_to_end(key)
            except KeyError:  # evicted meanwhile by another thread: still valid
                pass
            return cached
        address = ipv4_int(ip)
        if address is None:
            if ":" not in ip:
                return EMPTY_GEO  # not a dotted quad; "010.1.1.1" would even be read as octal
            found = self._find_ipv6(ip)
            return EMPTY_GEO if found is None else found[0]
        slash24 = address >> 8
        geo = self._known_network(slash24)
        if geo is None:
            found = self._find_ipv4(ip, address)
            if found is None:
                return EMPTY_GEO
            geo, prefix_len = found
            if prefix_len > 24:
                return geo  # the /24 is split between networks: nothing to share
            if prefix_len < 24:
                self._remember_network(slash24, max(prefix_len, 0), geo)
        self._cache[key] = geo  # the whole /24 lies in this network: same answer
        if len(self._cache) > CACHE_SIZE:
            with suppress(KeyError):
                self._cache.popitem(last=False)
        return geo

    def _known_network(self, slash24: int) -> Geo | None:
        """The answer for a known network larger than /24 that holds the /24 (the database's
        networks do not overlap: the one holding it is its network)."""
        for shift, table in self._network_tables:  # ~16 lengths: one shift and read each
            geo = table.get(slash24 >> shift)
            if geo is not None:
                return geo
        return None

    def _remember_network(self, slash24: int, length: int, geo: Geo) -> None:
        table = self._networks.get(length)
        if table is None:
            table = self._networks[length] = OrderedDict()
            self._network_tables = tuple((24 - n, t) for n, t in sorted(self._networks.items()))
        if len(table) >= NETWORKS_PER_LENGTH:
            with suppress(KeyError):  # emptied meanwhile by another thread
                table.popitem(last=False)
        table[slash24 >> (24 - length)] = geo

    def _find_ipv4(self, ip: str, address: int) -> tuple[Geo, int] | None:
        """What :meth:`_decode` gives for ``ip`` (``address`` as an int), from the record
        cache when the record holding it was decoded lately."""
        records = self._records
        found = None if records is None else records.find_ipv4(address)
        return self._decode(ip) if found is None else self._record_geo(found, ip)

    def _find_ipv6(self, ip: str) -> tuple[Geo, int] | None:
        """:meth:`_find_ipv4` for an address with a colon."""
        records = self._records
        if records is None:
            return self._decode(ip)
        try:
            packed = socket.inet_pton(socket.AF_INET6, ip)
        except (OSError, ValueError):  # a scope ("fe80::1%eth0"), NUL, garbage: as before
            return self._decode(ip)
        found = records.find_ipv6(packed)
        return self._decode(ip) if found is None else self._record_geo(found, ip)

    def _record_geo(self, found: Found, ip: str) -> tuple[Geo, int] | None:
        """The Geo of the record at ``found``'s offset, decoded (for ``ip``) only when it is
        not in the record cache."""
        offset, prefix_len = found
        if offset is None:
            return EMPTY_GEO, prefix_len  # no record: what the reader's None gives
        geo = self._decoded.get(offset)
        if geo is not None:
            try:  # noqa: SIM105 (as in lookup)
                self._decoded.move_to_end(offset)
            except KeyError:  # evicted meanwhile by another thread: still valid
                pass
            return geo, prefix_len
        decoded = self._decode(ip)
        if decoded is not None:
            self._decoded[offset] = decoded[0]
            if len(self._decoded) > RECORD_CACHE_SIZE:
                with suppress(KeyError):
                    self._decoded.popitem(last=False)
        return decoded

    def _decode(self, ip: str) -> tuple[Geo, int] | None:
        """``maxminddb``'s record for ``ip`` as a Geo, with its network's prefix length;
        None when the address or the reader refuses."""
        try:
            record, prefix_len = self._mmdb_reader.get_with_prefix_len(ip)
        except (ValueError, TypeError):
            return None
        try:
            geo = _from_record(record) if isinstance(record, dict) else EMPTY_GEO
        except (AttributeError, TypeError, KeyError):  # a database of another shape
            geo = EMPTY_GEO
        return geo, prefix_len

    def close(self) -> None:
        self._records = None  # it borrows the reader's handle, which closing frees
        self._decoded.clear()
        self._mmdb_reader.close()


_explained: set[str] = set()


def _explain(reason: str) -> None:
    """Say once per reason why misses are decoded, not looked up by record."""
    if reason not in _explained:
        _explained.add(reason)
        log.info("geo: every address no cache answers is decoded by maxminddb (~30 µs), "
                 "without the record cache: %s", reason)


def ipv4_int(text: str) -> int | None:
    """``text`` as an integer when it is a dotted-quad IPv4 address, else None.

    It accepts exactly the strings ``ipaddress.IPv4Address`` accepts (~0.5 µs against its
    ~4 µs), so a caller that sends everything else (IPv6, IPv4-mapped IPv6, garbage) on to
    ``ipaddress`` gets the same answers. ``inet_aton`` alone would not do: it reads
    "010.1.1.1" as octal and takes "127.1" and "0x7f.0.0.1" too; after the pattern it only
    packs four plain octets.
    """
    if _IPV4.fullmatch(text) is None:
        return None
    return int.from_bytes(socket.inet_aton(text), "big")


def bundled_database() -> Path | None:
    """The GeoLite2 City file inside the installed python-geoip-geolite2, if any."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / BUNDLED_FILE
        if candidate.is_file():
            return candidate
    return None


_warned_bundled = False


def open_reader(path: str = "") -> GeoReader | None:
    """Open the configured database, or the bundled 2015 file (one warning) when ``path`` is
    empty; None when there is neither. A configured file that cannot be opened raises
    ``ValueError`` at start-up rather than silently giving every visitor an empty Geo."""
    global _warned_bundled
    if path:
        try:
            return GeoReader(path)
        except (OSError, maxminddb.InvalidDatabaseError) as exc:
            raise ValueError(f"context.geo_database = {path!r} is not valid: expected a "
                             f"readable GeoIP2/GeoLite2 City .mmdb file ({exc})") from None
    bundled = bundled_database()
    if bundled is None:
        log.warning("no GeoIP database: context.geo_database is not set and the "
                    "python-geoip-geolite2 package is not installed; geo.* will be empty")
        return None
    if not _warned_bundled:
        _warned_bundled = True
        log.warning("geo: using the GeoLite2 City file bundled with python-geoip-geolite2 "
                    "(%s), which dates from 2015: countries are mostly right, cities and "
                    "regions often wrong. Set context.geo_database to a current GeoIP2 or "
                    "GeoLite2 City file.", bundled)
    return GeoReader(bundled)


def locate(
    reader: GeoReader | None,
    client_ip: str,
    cdn_headers: Mapping[str, str] | None = None,
    *,
    peer_trusted: bool,
    trust_cdn_headers: bool = True,
) -> Geo:
    """The visitor's location: the database's answer for ``client_ip``, overridden by CDN
    geo headers (lower-case names) only when ``peer_trusted`` and ``trust_cdn_headers``.

    When the CDN names a different country than the database, the database's region, city
    and time zone are dropped instead of mixed in (Paris, Germany helps no one).
    """
    geo = reader.lookup(client_ip) if reader is not None else EMPTY_GEO
    if not (peer_trusted and trust_cdn_headers and cdn_headers):
        return geo
    cdn = from_cdn_headers(cdn_headers)
    if cdn is EMPTY_GEO:
        return geo
    if geo is EMPTY_GEO or (cdn.country and cdn.country != geo.country):
        return cdn
    same_region = not cdn.region or cdn.region == geo.region
    return Geo(
        country=geo.country,
        country_name=geo.country_name,
        region=cdn.region or geo.region,
        region_name=geo.region_name if same_region else "",
        city=cdn.city or (geo.city if same_region else ""),
        continent=cdn.continent or geo.continent,
        time_zone=cdn.time_zone or geo.time_zone,
        source="cdn",
    )


def from_cdn_headers(headers: Mapping[str, str]) -> Geo:
    """A Geo from CDN headers alone (lower-case names); the empty Geo when none is usable."""
    values: dict[str, str] = {}
    for field_name, names in CDN_HEADERS.items():
        for name in names:
            raw = headers.get(name)
            value = _clean(field_name, raw) if raw else ""
            if value:
                values[field_name] = value
                break
    if not values:
        return EMPTY_GEO
    return Geo(source="cdn", **values)


def _clean(field_name: str, raw: str) -> str:
    value = raw.strip()
    if "%" in value:
        value = unquote(value)  # Vercel URL-encodes cities ("S%C3%A3o%20Paulo")
    if field_name in ("country", "continent"):
        value = value.upper()
        if not _COUNTRY.fullmatch(value) or (field_name == "country" and value in _NOT_COUNTRIES):
            return ""
        return value
    if field_name == "time_zone":
        return value if _ZONE.fullmatch(value) else ""
    if field_name == "region":
        value = value.upper().rsplit("-", 1)[-1]  # "DE-BE" and "BE" both mean Berlin
        return value if value.isalnum() and len(value) <= 3 else ""
    return value[:100] if value.isprintable() else ""


def _from_record(record: dict[str, Any]) -> Geo:
    """Read the few fields the context uses from a GeoIP2 City/Country record."""
    country = record.get("country") or record.get("registered_country") or _NONE
    subdivisions = record.get("subdivisions")
    region = subdivisions[0] if isinstance(subdivisions, list) and subdivisions else _NONE
    # Positional, in field order (country, country_name, region, region_name, city,
    # continent, time_zone, source): keywords cost ~1 µs more on every decode.
    return Geo(
        country.get("iso_code") or "",
        (country.get("names") or _NONE).get("en") or "",
        region.get("iso_code") or "",
        (region.get("names") or _NONE).get("en") or "",
        ((record.get("city") or _NONE).get("names") or _NONE).get("en") or "",
        (record.get("continent") or _NONE).get("code") or "",
        (record.get("location") or _NONE).get("time_zone") or "",
        "database",
    )


_NONE: dict[str, Any] = {}
