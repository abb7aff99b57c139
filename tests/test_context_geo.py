"""Geo lookup: a GeoIP2-City database written at test time, the bundled 2015 GeoLite2 file,
bad addresses, and CDN headers that are believed only from trusted peers."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import geoip2.database
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from proxy.context import geo
from proxy.context.geo import EMPTY_GEO, Geo, GeoReader, locate, open_reader


def _city(country: str, country_name: str, continent: str, city: str, zone: str,
          region: str = "", region_name: str = "") -> dict:
    record = {
        "city": {"geoname_id": 1, "names": {"en": city, "de": city + " (de)"}},
        "continent": {"code": continent, "geoname_id": 2, "names": {"en": continent}},
        "country": {"iso_code": country, "geoname_id": 3, "names": {"en": country_name}},
        "location": {"time_zone": zone, "latitude": 0.0, "longitude": 0.0,
                     "accuracy_radius": 100},
    }
    if region:
        record["subdivisions"] = [{"iso_code": region, "geoname_id": 4,
                                   "names": {"en": region_name}}]
    return record


NETWORKS = {
    "81.2.69.0/25": _city("GB", "United Kingdom", "EU", "London", "Europe/London", "ENG",
                          "England"),
    "81.2.69.128/25": _city("GB", "United Kingdom", "EU", "Manchester", "Europe/London", "ENG",
                            "England"),
    "2.125.160.0/24": _city("DE", "Germany", "EU", "Berlin", "Europe/Berlin", "BE", "Berlin"),
    "216.160.83.0/24": _city("US", "United States", "NA", "Milton", "America/Los_Angeles",
                             "WA", "Washington"),
    "2a02:8100::/32": _city("DE", "Germany", "EU", "Hamburg", "Europe/Berlin", "HH", "Hamburg"),
    "10.20.0.0/16": _city("NL", "Netherlands", "EU", "Office", "Europe/Amsterdam"),
    "100.64.0.0/20": _city("NL", "Netherlands", "EU", "Branch", "Europe/Amsterdam"),
}


@pytest.fixture(scope="module")
def test_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-City",
                        languages=["en", "de"], description="Kairos test city database")
    for network, record in NETWORKS.items():
        writer.insert_network(IPSet([network]), record)
    path = tmp_path_factory.mktemp("geo") / "test-city.mmdb"
    writer.to_db_file(str(path))
    return path


@pytest.fixture(scope="module")
def reader(test_db: Path) -> GeoReader:
    return GeoReader(test_db)


@pytest.fixture(scope="module")
def bundled() -> GeoReader:
    found = open_reader("")
    assert found is not None, "python-geoip-geolite2 must be installed for these tests"
    return found


def test_the_test_database_is_a_real_geoip2_city_file(test_db: Path) -> None:
    with geoip2.database.Reader(str(test_db)) as official:
        answer = official.city("2.125.160.216")
    assert (answer.country.iso_code, answer.city.name) == ("DE", "Berlin")


@pytest.mark.parametrize(
    ("ip", "country", "city", "region", "continent", "zone"),
    [
        ("81.2.69.1", "GB", "London", "ENG", "EU", "Europe/London"),
        ("81.2.69.160", "GB", "Manchester", "ENG", "EU", "Europe/London"),
        ("2.125.160.216", "DE", "Berlin", "BE", "EU", "Europe/Berlin"),
        ("216.160.83.56", "US", "Milton", "WA", "NA", "America/Los_Angeles"),
        ("2a02:8100:1234::1", "DE", "Hamburg", "HH", "EU", "Europe/Berlin"),
        ("10.20.30.40", "NL", "Office", "", "EU", "Europe/Amsterdam"),  # a site's own ranges
    ],
)
def test_lookup_in_the_test_database(
    reader: GeoReader, ip: str, country: str, city: str, region: str, continent: str, zone: str
) -> None:
    found = reader.lookup(ip)
    assert (found.country, found.city, found.region, found.continent, found.time_zone) == (
        country, city, region, continent, zone)
    assert found.source == "database"


def test_a_cached_slash24_never_hides_a_smaller_network(reader: GeoReader) -> None:
    # 81.2.69.0/24 is split in two /25s: the answer for .1 must not be reused for .200.
    for _ in range(2):
        assert reader.lookup("81.2.69.1").city == "London"
        assert reader.lookup("81.2.69.200").city == "Manchester"
    # a whole /24: cached under its truncated address, same answer for a neighbour
    assert reader.lookup("2.125.160.1") == reader.lookup("2.125.160.254")
    assert "2.125.160" in reader._cache and "81.2.69" not in reader._cache
    assert not any(key.count(".") == 3 for key in reader._cache)  # no full addresses kept


@pytest.mark.parametrize(
    "ip",
    ["", "8.8.8.8", "192.168.1.1", "127.0.0.1", "::1", "not-an-ip", "999.1.1.1", "1.2.3",
     "81.2.69.04", "81.2.69.256", "81.2.69.1 ", "fe80::1%eth0", "2.125.160.-1",
     # the /24 is cached: the last octet must still be well formed
     "2.125.160.04", "2.125.160.256", "2.125.160.", "2.125.160.1 ", "2.125.160.١",
     "2.125.160.+1", "2.125.160.1.1", " 2.125.160.1"],
)
def test_misses_and_bad_addresses_give_the_empty_geo(reader: GeoReader, ip: str) -> None:
    reader.lookup("81.2.69.1")  # warm the cache for the /24 of some of the bad ones
    reader.lookup("2.125.160.1")
    assert reader.lookup(ip) == EMPTY_GEO


@pytest.mark.parametrize(
    ("ip", "country", "continent"),
    [
        ("8.8.8.8", "US", "NA"),
        ("1.1.1.1", "AU", "OC"),
        ("81.2.69.160", "GB", "EU"),
        ("193.99.144.80", "DE", "EU"),
        ("62.4.0.1", "FR", "EU"),
        ("133.242.0.3", "JP", "AS"),
        ("200.160.2.3", "BR", "SA"),
        ("2001:4860:4860::8888", "US", "NA"),
    ],
)
def test_real_addresses_in_the_bundled_2015_database(
    bundled: GeoReader, ip: str, country: str, continent: str
) -> None:
    found = bundled.lookup(ip)
    assert (found.country, found.continent) == (country, continent)


def test_bundled_details(bundled: GeoReader) -> None:
    google = bundled.lookup("8.8.8.8")
    assert (google.city, google.region, google.time_zone) == (
        "Mountain View", "CA", "America/Los_Angeles")
    assert bundled.database_type == "GeoLite2-City"
    assert bundled.build_epoch < 1_451_606_400  # built in 2015


@pytest.mark.parametrize("ip", ["10.0.0.1", "192.168.0.10", "127.0.0.1", "::1", "garbage"])
def test_private_and_garbage_in_the_bundled_database(bundled: GeoReader, ip: str) -> None:
    assert bundled.lookup(ip) == EMPTY_GEO


def test_the_bundled_file_warns_once(monkeypatch: pytest.MonkeyPatch,
                                     caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(geo, "_warned_bundled", False)
    with caplog.at_level(logging.WARNING, logger="proxy.context.geo"):
        first, second = open_reader(""), open_reader("")
    assert first is not None and second is not None
    warnings = [r for r in caplog.records if "2015" in r.getMessage()]
    assert len(warnings) == 1


def test_a_configured_database_is_used_without_warning(
    test_db: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(geo, "_warned_bundled", False)
    with caplog.at_level(logging.WARNING, logger="proxy.context.geo"):
        configured = open_reader(str(test_db))
    assert configured is not None and configured.lookup("2.125.160.9").city == "Berlin"
    assert caplog.records == []


def test_a_broken_configured_database_fails_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"context\.geo_database"):
        open_reader(str(tmp_path / "missing.mmdb"))
    junk = tmp_path / "junk.mmdb"
    junk.write_bytes(b"not a database" * 100)
    with pytest.raises(ValueError, match=r"context\.geo_database"):
        open_reader(str(junk))


CLOUDFLARE = {"cf-ipcountry": "FR", "cf-ipcity": "Lyon", "cf-timezone": "Europe/Paris",
              "cf-ipcontinent": "EU"}
VERCEL = {"x-vercel-ip-country": "br", "x-vercel-ip-city": "S%C3%A3o%20Paulo",
          "x-vercel-ip-country-region": "SP", "x-vercel-ip-timezone": "America/Sao_Paulo"}
CLOUDFRONT = {"cloudfront-viewer-country": "DE", "cloudfront-viewer-city": "Munich",
              "cloudfront-viewer-country-region": "BY",
              "cloudfront-viewer-time-zone": "Europe/Berlin"}


@pytest.mark.parametrize(
    ("headers", "trusted", "trust_setting", "expected"),
    [
        (CLOUDFLARE, False, True, ("DE", "Berlin", "Europe/Berlin", "database")),
        (CLOUDFLARE, True, False, ("DE", "Berlin", "Europe/Berlin", "database")),
        (CLOUDFLARE, True, True, ("FR", "Lyon", "Europe/Paris", "cdn")),
        (VERCEL, True, True, ("BR", "São Paulo", "America/Sao_Paulo", "cdn")),
        (VERCEL, False, True, ("DE", "Berlin", "Europe/Berlin", "database")),
        # same country as the database: CDN fields win, the database fills the gaps
        (CLOUDFRONT, True, True, ("DE", "Munich", "Europe/Berlin", "cdn")),
        ({"cf-ipcountry": "DE"}, True, True, ("DE", "Berlin", "Europe/Berlin", "cdn")),
        ({"cf-ipcountry": "XX"}, True, True, ("DE", "Berlin", "Europe/Berlin", "database")),
        ({"cf-ipcountry": "T1"}, True, True, ("DE", "Berlin", "Europe/Berlin", "database")),
        ({"cf-ipcountry": "<script>"}, True, True, ("DE", "Berlin", "Europe/Berlin",
                                                    "database")),
        ({}, True, True, ("DE", "Berlin", "Europe/Berlin", "database")),
    ],
)
def test_cdn_headers_only_from_trusted_peers(
    reader: GeoReader, headers: dict, trusted: bool, trust_setting: bool, expected: tuple
) -> None:
    found = locate(reader, "2.125.160.216", headers, peer_trusted=trusted,
                   trust_cdn_headers=trust_setting)
    assert (found.country, found.city, found.time_zone, found.source) == expected


def test_cdn_region_that_differs_drops_the_database_city(reader: GeoReader) -> None:
    found = locate(reader, "2.125.160.216",
                   {"cloudfront-viewer-country": "DE", "cloudfront-viewer-country-region": "BY"},
                   peer_trusted=True)
    assert (found.region, found.city, found.region_name) == ("BY", "", "")


def test_cdn_headers_without_a_database() -> None:
    found = locate(None, "203.0.113.9", CLOUDFRONT, peer_trusted=True)
    assert found == Geo(country="DE", region="BY", city="Munich", time_zone="Europe/Berlin",
                        source="cdn")
    assert locate(None, "203.0.113.9", CLOUDFRONT, peer_trusted=False) == EMPTY_GEO


def test_bad_cdn_values_are_dropped() -> None:
    found = geo.from_cdn_headers({"cf-ipcountry": "us", "cf-timezone": "../../etc/passwd",
                                  "cf-ipcity": "Bad\x00City", "cf-region-code": "US-CA"})
    assert (found.country, found.time_zone, found.city, found.region) == ("US", "", "", "CA")


# -- networks larger than /24 -------------------------------------------------------------------

class CountingReader:
    """Stands in for maxminddb's reader and counts the records it decodes."""

    def __init__(self, real: object) -> None:
        self.real, self.decoded = real, 0

    def get_with_prefix_len(self, ip: str) -> object:
        self.decoded += 1
        return self.real.get_with_prefix_len(ip)  # type: ignore[attr-defined]

    def close(self) -> None:
        self.real.close()  # type: ignore[attr-defined]


def test_a_new_slash24_in_a_known_network_is_not_decoded_again(test_db: Path) -> None:
    reader = GeoReader(test_db)
    counting = CountingReader(reader._reader)
    reader._reader = counting  # type: ignore[assignment]
    assert reader.lookup("10.20.1.1").city == "Office"  # 10.20.0.0/16
    assert reader.lookup("10.20.2.1").city == "Office"  # another /24 of the same network
    assert reader.lookup("10.20.255.9").city == "Office"
    assert counting.decoded == 1
    assert reader.lookup("100.64.0.1").city == "Branch"  # 100.64.0.0/20
    assert reader.lookup("100.64.15.1").city == "Branch"
    assert counting.decoded == 2
    assert reader.lookup("100.64.16.1") == EMPTY_GEO  # just outside it: looked up
    assert reader.lookup("10.21.0.1") == EMPTY_GEO
    assert counting.decoded == 4
    assert reader.lookup("81.2.69.1").city == "London"  # a /25: neither network nor /24 kept
    assert reader.lookup("81.2.69.2").city == "London"
    assert counting.decoded == 6
    assert reader.lookup("2a02:8100::1").city == "Hamburg"  # IPv6: straight to maxminddb
    assert counting.decoded == 7
    assert not any(str(key).count(".") == 3 for key in reader._cache)  # no whole addresses
    assert all(prefix < 1 << length for length, table in reader._networks.items()
               for prefix in table)  # prefixes, never whole addresses
    reader.close()
    assert reader.lookup("2.125.160.1") == EMPTY_GEO  # closed: no answer, no exception


def test_known_networks_answer_as_the_database_does(bundled: GeoReader) -> None:
    """Addresses in runs (neighbouring /24s share networks) and scattered, looked up through
    the network memo and straight from maxminddb: the same Geo every time."""
    import random
    rng = random.Random(5)
    through_memo = GeoReader(bundled.path)
    runs = [f"{a}.{b}.{c}.{rng.randint(1, 254)}" for a in rng.sample(range(1, 224), 40)
            for b in (rng.randint(0, 255),) for c in range(0, 256, 3)]
    scattered = [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(2000)]
    for ip in runs + scattered:
        record = bundled._reader.get(ip)
        expected = geo._from_record(record) if isinstance(record, dict) else EMPTY_GEO
        assert through_memo.lookup(ip) == expected, ip
    assert through_memo._networks  # the memo was used
