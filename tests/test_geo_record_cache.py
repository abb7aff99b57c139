"""The geo record cache (proxy.context.mmdb_records): the record holding an address is found
through libmaxminddb on the reader's own handle, and a record decoded before is not decoded
again. The answers must be exactly those of the plain decode, whatever the address; without
the C functions (or with anything unexpected) the reader must fall back to that decode."""

from __future__ import annotations

import ctypes
import dataclasses
import ipaddress
import logging
import random
import socket
import threading
from pathlib import Path

import maxminddb
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from proxy.context import geo, mmdb_records
from proxy.context.geo import EMPTY_GEO, Geo, GeoReader, bundled_database, ipv4_int
from proxy.context.mmdb_records import FileFacts, RecordFinder, Unavailable, open_finder
from tests.test_context_geo import CountingReader


def reference(plain: object, ip: str) -> Geo:
    """What GeoReader.lookup answered before the record cache: the decoded record, for an
    address that is a dotted quad or has a colon, else nothing."""
    if not ip or (ipv4_int(ip) is None and ":" not in ip):
        return EMPTY_GEO
    try:
        record = plain.get(ip)  # type: ignore[attr-defined]
    except (ValueError, TypeError):
        return EMPTY_GEO
    return geo._from_record(record) if isinstance(record, dict) else EMPTY_GEO


def counting(reader: GeoReader) -> CountingReader:
    """The reader's decodes counted, behind its record finder (which keeps the real one)."""
    wrapper = CountingReader(reader._mmdb_reader)
    reader._mmdb_reader = wrapper  # not reader._reader, which would drop the finder
    return wrapper


def addresses(rng: random.Random) -> list[str]:
    """Tens of thousands of addresses: IPv4 over the whole space (private, reserved, unknown
    included), neighbouring /24s, bench/hot_view.py's pattern, IPv6, IPv4-mapped IPv6 and
    malformed strings."""
    out = [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(20_000)]
    for first in rng.sample(range(1, 224), 30):  # runs: networks larger than /24 and splits
        second = rng.randrange(256)
        out += [f"{first}.{second}.{third}.{rng.randrange(256)}" for third in range(0, 256, 2)]
    out += [f"{1 + n % 223}.{n // 223 % 256}.{n // 57000 % 256}.7" for n in range(5_000)]
    out += [f"{a}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"
            for a in (0, 10, 100, 127, 169, 172, 192, 198, 203, 224, 239, 240, 255)
            for _ in range(40)]
    out += [str(ipaddress.IPv6Address((0x2000 + rng.randrange(0x2000)) << 112
                                      | rng.getrandbits(112))) for _ in range(2_000)]
    out += [f"::ffff:{ipaddress.IPv4Address(rng.getrandbits(32))}" for _ in range(1_000)]
    out += [f"2002:{rng.getrandbits(16):x}:{rng.getrandbits(16):x}::1" for _ in range(200)]
    out += ["8.8.8.8", "1.1.1.1", "81.2.69.160", "2.125.160.216", "0.0.0.0", "255.255.255.255",
            "::", "::1", "fe80::1", "2001:4860:4860::8888", "::ffff:8.8.8.8", "64:ff9b::808:808",
            "2a02:8100::1", "::8.8.8.8", "2001::1", "ff02::1",
            # malformed, or forms only a lenient parser takes
            "", " ", "1.2.3", "1.2.3.4.5", "01.2.3.4", "1.2.3.256", " 1.2.3.4", "1.2.3.4 ",
            "0x7f.0.0.1", "127.1", "1.2.3.-1", "1.2.3.+1", "١.٢.٣.٤", "1.2.3.4\x00",
            "fe80::1%eth0", "fe80::1%1", "::1\x00x", ":::", "1::2::3", "gggg::1", "[::1]",
            "::ffff:1.2.3", "::ffff:1.2.3.256", "\ud800:1", "2001:db8::/32", "::1 ", " ::1",
            "1:2:3:4:5:6:7:8:9", "not-an-ip", "localhost", "8.8.8.8:80"]
    return out


@pytest.fixture(scope="module")
def bundled_path() -> Path:
    path = bundled_database()
    assert path is not None, "python-geoip-geolite2 must be installed for these tests"
    return path


def _city(country: str, city: str, zone: str = "Europe/Berlin") -> dict:
    return {"city": {"names": {"en": city, "de": city}},
            "continent": {"code": "EU", "names": {"en": "Europe"}},
            "country": {"iso_code": country, "names": {"en": country + " land"}},
            "location": {"time_zone": zone},
            "subdivisions": [{"iso_code": "BE", "names": {"en": "Berlin"}}]}


# Networks of many sizes, some sharing a record (the writer stores equal records once), some
# splitting a /24, a record of another shape (no country: registered_country is used).
SMALL_NETWORKS = {
    "5.1.1.0/24": _city("DE", "Berlin"),
    "5.9.0.0/16": _city("DE", "Berlin"),
    "5.10.0.0/20": _city("DE", "Berlin"),
    "5.2.0.0/25": _city("FR", "Paris", "Europe/Paris"),
    "5.2.0.128/26": _city("FR", "Lyon", "Europe/Paris"),
    "5.3.0.0/23": {"registered_country": {"iso_code": "NL", "names": {"en": "Netherlands"}},
                   "subdivisions": []},
    "5.4.0.0/24": {"country": {}, "city": {"names": {}}},
    "10.20.0.0/16": _city("NL", "Office"),
    "2a02:8100::/32": _city("DE", "Hamburg"),
    "2a02:8200::/48": _city("DE", "Berlin"),
}


def _small_db(path: Path, ip_version: int, database_type: str = "GeoIP2-City") -> Path:
    writer = MMDBWriter(ip_version=ip_version, ipv4_compatible=ip_version == 6,
                        database_type=database_type, languages=["en", "de"],
                        description="Kairos record cache test")
    for network, record in SMALL_NETWORKS.items():
        if ip_version == 4 and ":" in network:
            continue
        writer.insert_network(IPSet([network]), record)
    writer.to_db_file(str(path))
    return path


@pytest.fixture(scope="module")
def small_dbs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("records")
    return {"v6": _small_db(folder / "v6.mmdb", 6), "v4": _small_db(folder / "v4.mmdb", 4),
            "country": _small_db(folder / "country.mmdb", 6, "GeoIP2-Country")}


# -- the same answers ---------------------------------------------------------------------------

def test_every_address_gets_the_answer_of_the_plain_decode(bundled_path: Path) -> None:
    rng = random.Random(20)
    ips = addresses(rng)
    ips = ips + rng.sample(ips, len(ips))  # again, in another order: now the caches answer
    fast = GeoReader(bundled_path)
    slow = GeoReader(bundled_path, find_records=None)  # the path every lookup took before
    assert fast._records is not None and slow._records is None
    plain = maxminddb.open_database(str(bundled_path))
    decodes = counting(fast)
    for ip in ips:
        expected = reference(plain, ip)
        assert fast.lookup(ip) == expected, ip
        assert slow.lookup(ip) == expected, ip
    # and it was the record cache that answered most of what no other cache did
    assert len(fast._decoded) < decodes.decoded < len(ips) / 4
    fast.close()
    slow.close()


@pytest.mark.parametrize("version", ["v6", "v4"])
def test_small_databases_answer_as_the_plain_decode(small_dbs: dict[str, Path],
                                                    version: str) -> None:
    rng = random.Random(3)
    ips = [f"5.{b}.{c}.{d}" for b in range(12) for c in (0, 1, 2, 3, 5, 77, 255)
           for d in (0, 1, 127, 128, 191, 192, 255)]
    ips += [f"10.20.{rng.randrange(256)}.{rng.randrange(256)}" for _ in range(200)]
    ips += ["2a02:8100::1", "2a02:8100:ffff::9", "2a02:8200::1", "2a02:8200:0:1::1", "::1",
            "::ffff:5.1.1.1", "::ffff:5.2.0.200", "fe80::1%eth0", "9.9.9.9", "garbage"]
    ips = ips + list(reversed(ips))
    reader = GeoReader(small_dbs[version])
    assert reader._records is not None
    plain = maxminddb.open_database(str(small_dbs[version]))
    for ip in ips:
        assert reader.lookup(ip) == reference(plain, ip), ip
    reader.close()


def test_networks_sharing_a_record_decode_it_once(small_dbs: dict[str, Path]) -> None:
    reader = GeoReader(small_dbs["v6"])
    decodes = counting(reader)
    berlin = reader.lookup("5.1.1.1")  # 5.1.1.0/24
    assert berlin.city == "Berlin" and decodes.decoded == 1
    assert reader.lookup("5.9.200.1") is berlin  # 5.9.0.0/16, the same record
    assert reader.lookup("5.10.3.1") is berlin  # 5.10.0.0/20
    assert reader.lookup("2a02:8200::7") is berlin  # IPv6 too
    assert decodes.decoded == 1
    assert reader.lookup("5.2.0.1").city == "Paris"  # another record: decoded
    assert reader.lookup("5.2.0.130").city == "Lyon"  # the /24 split: no /24 cache ...
    assert reader.lookup("5.2.0.2").city == "Paris"  # ... but the record is known
    assert decodes.decoded == 3
    assert reader.lookup("5.2.0.200") == EMPTY_GEO  # no record: nothing to decode
    assert reader.lookup("99.1.1.1") == EMPTY_GEO
    assert decodes.decoded == 3
    # the prefix rules of the /24 and network caches still hold
    assert "5.1.1" in reader._cache and "5.2.0" not in reader._cache
    assert reader._networks[16] and reader._networks[20]


# -- the fallback -------------------------------------------------------------------------------

def _unavailable(reader: object, facts: FileFacts) -> RecordFinder:
    raise Unavailable("no libmaxminddb here (test)")


def _broken(reader: object, facts: FileFacts) -> RecordFinder:
    raise RuntimeError("something no one expected")


@pytest.mark.parametrize(("find_records", "reason"), [
    (_unavailable, "no libmaxminddb here (test)"),
    (_broken, "RuntimeError: something no one expected"),
])
def test_without_the_c_functions_every_miss_is_decoded(
    small_dbs: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, find_records: object, reason: str,
) -> None:
    monkeypatch.setattr(geo, "_explained", set())
    plain = maxminddb.open_database(str(small_dbs["v6"]))
    with caplog.at_level(logging.INFO, logger="proxy.context.geo"):
        readers = [GeoReader(small_dbs["v6"], find_records=find_records)  # type: ignore[arg-type]
                   for _ in range(2)]
    assert all(reader._records is None for reader in readers)
    said = [r.getMessage() for r in caplog.records if reason in r.getMessage()]
    assert len(said) == 1 and "decoded" in said[0]  # once, however many readers
    decodes = counting(readers[0])
    for ip in ("5.1.1.1", "5.9.200.1", "5.2.0.1", "2a02:8200::7", "::1", "bad"):
        assert readers[0].lookup(ip) == reference(plain, ip)
    assert decodes.decoded == 5  # no record cache: every address but "bad" decoded
    assert not readers[0]._decoded


@pytest.mark.parametrize("extension", ["kairos_no_such_module", "_ctypes"])
def test_an_extension_without_libmaxminddb_falls_back(
    small_dbs: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, extension: str,
) -> None:
    # not installed at all, or a shared library that does not export MMDB_lookup_sockaddr
    monkeypatch.setattr(mmdb_records, "EXTENSION", extension)
    monkeypatch.setattr(geo, "_explained", set())
    with pytest.raises(Unavailable, match=extension):
        mmdb_records.load_lookup()
    with caplog.at_level(logging.INFO, logger="proxy.context.geo"):
        reader = GeoReader(small_dbs["v6"])
    assert reader._records is None
    assert [r for r in caplog.records if extension in r.getMessage()]
    assert reader.lookup("5.1.1.1").city == "Berlin"


def test_a_database_other_than_city_falls_back(small_dbs: dict[str, Path],
                                               monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(geo, "_explained", set())
    with caplog.at_level(logging.INFO, logger="proxy.context.geo"):
        reader = GeoReader(small_dbs["country"])
    assert reader._records is None
    assert [r for r in caplog.records if "'GeoIP2-Country'" in r.getMessage()]
    assert reader.lookup("5.1.1.1").country == "DE"


def _facts(path: Path, reader: object) -> FileFacts:
    meta = reader.metadata()  # type: ignore[attr-defined]
    return FileFacts(path.stat().st_size, meta.node_count, meta.record_size, meta.ip_version,
                     meta.build_epoch)


@pytest.mark.parametrize("wrong", [{"size": 1}, {"node_count": 3}, {"record_size": 32},
                                   {"build_epoch": 0}, {"ip_version": 4}])
def test_a_handle_that_is_not_this_files_is_refused(small_dbs: dict[str, Path],
                                                    wrong: dict) -> None:
    reader = maxminddb.open_database(str(small_dbs["v6"]))
    facts = _facts(small_dbs["v6"], reader)
    assert mmdb_records.borrow_handle(reader, facts)  # the right facts: accepted
    with pytest.raises(Unavailable, match="does not describe this file"):
        mmdb_records.borrow_handle(reader, dataclasses.replace(facts, **wrong))


def test_a_pure_python_or_closed_reader_is_refused(small_dbs: dict[str, Path]) -> None:
    pure = maxminddb.open_database(str(small_dbs["v6"]), maxminddb.MODE_MMAP)
    facts = _facts(small_dbs["v6"], pure)
    with pytest.raises(Unavailable, match="pure-Python"):
        open_finder(pure, facts)
    closed = maxminddb.open_database(str(small_dbs["v6"]))
    closed.close()
    with pytest.raises(Unavailable, match="closed"):
        mmdb_records.borrow_handle(closed, facts)


def test_a_disagreement_with_the_reader_is_caught(small_dbs: dict[str, Path]) -> None:
    reader = maxminddb.open_database(str(small_dbs["v6"]))
    finder = open_finder(reader, _facts(small_dbs["v6"], reader))
    assert mmdb_records.agrees_with(finder, reader.get_with_prefix_len) == ""

    def off_by_one(ip: str) -> tuple[object, int]:
        record, length = reader.get_with_prefix_len(ip)
        return record, length + 1

    assert "from the reader" in mmdb_records.agrees_with(finder, off_by_one)
    assert "from the reader" in mmdb_records.agrees_with(
        finder, lambda ip: ({"a": 1}, reader.get_with_prefix_len(ip)[1]))


class _NothingFound:
    """A finder whose every lookup fails, as a ctypes error would make it."""

    def find_ipv4(self, address: int) -> None:
        return None

    def find_ipv6(self, packed: bytes) -> None:
        return None


def test_a_failed_lookup_falls_back_to_the_decode_for_that_address(
        small_dbs: dict[str, Path]) -> None:
    reader = GeoReader(small_dbs["v6"],
                       find_records=lambda reader, facts: _NothingFound())  # type: ignore
    decodes = counting(reader)
    assert reader.lookup("5.1.1.1").city == "Berlin"
    assert reader.lookup("5.9.1.1").city == "Berlin"
    assert reader.lookup("2a02:8200::7").city == "Berlin"
    assert decodes.decoded == 3 and not reader._decoded


def test_ctypes_errors_become_no_answer_not_exceptions(small_dbs: dict[str, Path]) -> None:
    reader = maxminddb.open_database(str(small_dbs["v6"]))
    finder = open_finder(reader, _facts(small_dbs["v6"], reader))

    def refuses(*args: object) -> object:
        raise ctypes.ArgumentError("argument 2: wrong type")

    finder._lookup = refuses
    assert finder.find_ipv4(0x05010101) is None
    assert finder.find_ipv6(bytes(16)) is None
    assert finder.find_ipv6(b"short") is None


def test_an_ipv6_address_in_an_ipv4_file_is_an_error_then_the_empty_geo(
        small_dbs: dict[str, Path]) -> None:
    reader = GeoReader(small_dbs["v4"])
    assert reader._records is not None
    assert reader._records.find_ipv6(socket.inet_pton(socket.AF_INET6, "2a02:8100::1")) is None
    assert reader.lookup("2a02:8100::1") == EMPTY_GEO
    assert reader.lookup("5.1.1.1").city == "Berlin"


# -- bounds and lifetime ------------------------------------------------------------------------

def test_the_caches_stay_bounded(bundled_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(geo, "RECORD_CACHE_SIZE", 50)
    monkeypatch.setattr(geo, "CACHE_SIZE", 200)
    monkeypatch.setattr(geo, "NETWORKS_PER_LENGTH", 20)
    reader = GeoReader(bundled_path)
    plain = maxminddb.open_database(str(bundled_path))
    rng = random.Random(8)
    hot = "8.8.8.8"
    for n in range(3_000):
        ip = str(ipaddress.IPv4Address(rng.getrandbits(32)))
        assert reader.lookup(ip) == reference(plain, ip), ip
        if n % 10 == 0:
            reader._cache.pop("8.8.8", None)
            reader._networks.clear()
            reader._network_tables = ()
            assert reader.lookup(hot).city == "Mountain View"
    assert len(reader._decoded) == 50  # full, never more
    assert len(reader._cache) <= 200
    assert all(len(table) <= 20 for table in reader._networks.values())
    # the record asked for every ten lookups is the most recently used: still there
    offset = reader._records.find_ipv4(ipv4_int(hot))[0]  # type: ignore[union-attr]
    assert offset in reader._decoded


def test_close_lets_go_of_the_borrowed_handle_first(small_dbs: dict[str, Path]) -> None:
    reader = GeoReader(small_dbs["v6"])
    assert reader.lookup("5.1.1.1").city == "Berlin"
    real = reader._mmdb_reader
    reader.close()
    assert reader._records is None and not reader._decoded and real.closed
    assert reader.lookup("5.9.1.1") == EMPTY_GEO  # closed: no answer, no exception
    assert reader.lookup("2a02:8200::7") == EMPTY_GEO


def test_replacing_the_reader_drops_the_record_finder(small_dbs: dict[str, Path]) -> None:
    reader = GeoReader(small_dbs["v6"])
    reader.lookup("5.1.1.1")
    wrapper = CountingReader(reader._reader)
    reader._reader = wrapper  # type: ignore[assignment]
    assert reader._records is None and not reader._decoded
    assert reader.lookup("5.9.1.1").city == "Berlin"
    assert wrapper.decoded == 1  # asked, not answered around it
    reader.close()


def test_lookups_from_several_threads_agree(bundled_path: Path) -> None:
    reader = GeoReader(bundled_path)
    plain = maxminddb.open_database(str(bundled_path))
    ips = [str(ipaddress.IPv4Address(random.Random(n).getrandbits(32))) for n in range(800)]
    expected = {ip: reference(plain, ip) for ip in ips}
    wrong: list[str] = []

    def work(part: list[str]) -> None:
        wrong.extend(ip for ip in part if reader.lookup(ip) != expected[ip])

    threads = [threading.Thread(target=work, args=(ips[n::4],)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
