"""Which data record of a MaxMind DB file holds an address, without decoding the record.

``maxminddb``'s reader only hands out decoded records: ``get_with_prefix_len`` walks the
search tree in C, then turns the WHOLE record into Python dicts (a City record has its
place names in eight languages): ~97,000 instructions, ~30 µs, of which the walk is a small
part. Yet networks share records: 100,000 random IPv4 addresses lie in ~10,300 records of
the 2015 GeoLite2 City file (as do 100,000 of bench/hot_view.py's), so a caller that knows
WHICH record holds an address can keep what it made of that record and skip the decode.
The record's position (its offset in the data section) is what libmaxminddb's
``MMDB_lookup_sockaddr`` returns; ``maxminddb`` has no API for it (only the pure-Python
reader's private ``_find_address_in_tree``, ~20 µs). Its C extension, though, links
libmaxminddb in and exports its functions, so :class:`RecordFinder` calls that one through
``ctypes``: ~13,000 instructions (~2 µs) per address, nearly all of it ``ctypes``' own.

It asks on the reader's own handle (its ``MMDB_s``), borrowed, rather than on a second one
from ``MMDB_open``: a second handle maps the file a second time, and the search tree's pages
then become resident in both mappings. Measured with a second handle, 10,000 random lookups
took RssFile from +30 MB to +51 MB (PSS unchanged: the page cache holds the file once).
Borrowing bypasses both packages' APIs, so everything it relies on is checked first, and
anything unexpected raises :class:`Unavailable`, after which the caller decodes as before:

- the extension's ``Reader`` object starts ``{PyObject_HEAD; MMDB_s *mmdb; PyObject
  *closed; ...}`` (maxminddb 3.2's source): checked by finding ``closed`` (False) where it
  should be;
- that pointer is the ``MMDB_s`` of this file: its first fields, read through /proc/self/mem
  (which refuses an unmapped address instead of crashing), must match the file's size and
  metadata. Its layout is fixed (libmaxminddb's header forbids new fields without a new
  SONAME);
- ``MMDB_lookup_result_s`` is ``{bool found_entry; {MMDB_s *mmdb; uint32_t offset} entry;
  uint16_t netmask}`` (as in libmaxminddb's first headers), and Linux's ``sockaddr_in(6)``
  layouts: checked by asking both this finder and the reader about a few addresses
  (:func:`agrees_with`);
- a GIL: on a free-threaded build the extension's locks would not cover these calls.

The reader owns the handle: the finder keeps the reader alive, and the reader's ``close``
must come after the finder's last lookup (both on the proxy's event loop). Lookups are
thread-safe otherwise: libmaxminddb only reads the mapping, and each call has its own result
and error cell; ``PyDLL`` keeps the GIL held during the ~1 µs call.
"""

from __future__ import annotations

import ctypes
import importlib.util
import socket
import struct
import sys
import sysconfig
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

EXTENSION = "maxminddb.extension"  # the C extension module, which links libmaxminddb in
DATA_SECTION_SEPARATOR = 16  # bytes of zeros between a MaxMind DB's search tree and its data
# Linux's sockaddr_in (family in host order, port, address, zero padding) and sockaddr_in6
# (family, port, flow information, address, scope id); ports stay 0.
_IN4_HEAD = struct.pack("=H", socket.AF_INET) + bytes(2)
_IN4_TAIL = bytes(8)
_IN6_HEAD = struct.pack("=H", socket.AF_INET6) + bytes(6)
_IN6_TAIL = bytes(4)

Found = tuple[int | None, int]  # (data offset, None when no record; prefix length)


class Unavailable(Exception):
    """Why records cannot be found through libmaxminddb here; the caller decodes instead."""


class _Entry(ctypes.Structure):
    _fields_ = (("mmdb", ctypes.c_void_p), ("offset", ctypes.c_uint32))


class _Result(ctypes.Structure):
    _fields_ = (("found_entry", ctypes.c_bool), ("entry", _Entry), ("netmask", ctypes.c_uint16))


class _HandleHead(ctypes.Structure):
    """``MMDB_s`` up to ``metadata.build_epoch`` (``ipv4_start_node`` flattened: same
    offsets), only ever filled from a copy of its bytes."""

    _fields_ = (
        ("flags", ctypes.c_uint32), ("filename", ctypes.c_void_p),
        ("file_size", ctypes.c_ssize_t), ("file_content", ctypes.c_void_p),
        ("data_section", ctypes.c_void_p), ("data_section_size", ctypes.c_uint32),
        ("metadata_section", ctypes.c_void_p), ("metadata_section_size", ctypes.c_uint32),
        ("full_record_byte_size", ctypes.c_uint16), ("depth", ctypes.c_uint16),
        ("ipv4_start_netmask", ctypes.c_uint16), ("ipv4_start_node", ctypes.c_uint32),
        ("node_count", ctypes.c_uint32), ("record_size", ctypes.c_uint16),
        ("ip_version", ctypes.c_uint16), ("database_type", ctypes.c_void_p),
        ("language_count", ctypes.c_size_t), ("languages", ctypes.c_void_p),
        ("format_major", ctypes.c_uint16), ("format_minor", ctypes.c_uint16),
        ("build_epoch", ctypes.c_uint64),
    )


@dataclass(frozen=True, slots=True)
class FileFacts:
    """What the file and the reader's metadata say, to recognise the file's ``MMDB_s`` by."""

    size: int
    node_count: int
    record_size: int
    ip_version: int
    build_epoch: int


def load_lookup() -> Callable[..., Any]:
    """libmaxminddb's ``MMDB_lookup_sockaddr`` from ``maxminddb``'s C extension, typed;
    :class:`Unavailable` when the extension is not installed or does not export it."""
    try:
        spec = importlib.util.find_spec(EXTENSION)
    except (ImportError, ValueError) as exc:
        raise Unavailable(f"{EXTENSION} cannot be found ({exc})") from None
    if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
        raise Unavailable(f"{EXTENSION} is not installed as a shared library "
                          "(pure-Python maxminddb)")
    try:
        # PyDLL, not CDLL: the GIL stays held during the ~1 µs call instead of being released
        # and taken again, which costs more than the call.
        lookup = ctypes.PyDLL(spec.origin).MMDB_lookup_sockaddr
    except (OSError, AttributeError) as exc:
        raise Unavailable(f"{spec.origin} does not export libmaxminddb's "
                          f"MMDB_lookup_sockaddr ({exc})") from None
    lookup.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)
    lookup.restype = _Result
    return lookup


def borrow_handle(reader: Any, facts: FileFacts) -> int:
    """The address of the ``MMDB_s`` inside ``maxminddb``'s C ``Reader`` ``reader``, opened
    on the file ``facts`` describes; :class:`Unavailable` says why not."""
    kind = type(reader)
    if (kind.__module__, kind.__qualname__) != (EXTENSION, "Reader"):
        raise Unavailable(f"the reader is a {kind.__module__}.{kind.__qualname__}, not "
                          f"{EXTENSION}.Reader (pure-Python maxminddb)")
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        raise Unavailable("free-threaded Python: the extension's locks would not cover "
                          "calls made around it")
    head = object.__basicsize__  # PyObject_HEAD
    if kind.__basicsize__ < head + 2 * ctypes.sizeof(ctypes.c_void_p) or reader.closed:
        raise Unavailable(f"{EXTENSION}.Reader is not laid out as {{PyObject_HEAD; "
                          "MMDB_s *mmdb; PyObject *closed}}, or is closed")
    # Both words lie inside the object (its __basicsize__ says so): reading them is safe.
    pointer = ctypes.c_void_p.from_address(id(reader) + head).value
    closed = ctypes.c_void_p.from_address(id(reader) + head + ctypes.sizeof(ctypes.c_void_p))
    if not pointer or closed.value != id(False):
        raise Unavailable(f"{EXTENSION}.Reader is not laid out as {{PyObject_HEAD; "
                          "MMDB_s *mmdb; PyObject *closed}}")
    found = _HandleHead.from_buffer_copy(_read_memory(pointer, ctypes.sizeof(_HandleHead)))
    wrong = _handle_mismatch(found, facts)
    if wrong:
        raise Unavailable(f"the reader's MMDB_s does not describe this file ({wrong})")
    return pointer


def _read_memory(address: int, size: int) -> bytes:
    """``size`` bytes of this process's memory at ``address``; :class:`Unavailable` when it
    is not mapped (/proc/self/mem answers EIO where a plain read would crash)."""
    try:
        with open("/proc/self/mem", "rb", buffering=0) as memory:
            memory.seek(address)
            data = memory.read(size)
    except (OSError, ValueError, OverflowError) as exc:
        raise Unavailable(f"cannot read the reader's MMDB_s at {address:#x} ({exc})") from None
    if data is None or len(data) != size:
        raise Unavailable(f"cannot read {size} bytes of the reader's MMDB_s at {address:#x}")
    return data


def _handle_mismatch(found: _HandleHead, facts: FileFacts) -> str:
    """"" when ``found`` is the MMDB_s of the file ``facts`` describes, else what differs."""
    record_bytes = facts.record_size * 2 // 8
    expected = {
        "file_size": facts.size,
        "node_count": facts.node_count,
        "record_size": facts.record_size,
        "ip_version": facts.ip_version,
        "build_epoch": facts.build_epoch,
        "depth": 128 if facts.ip_version == 6 else 32,
        "full_record_byte_size": record_bytes,
    }
    for name, value in expected.items():
        if getattr(found, name) != value:
            return f"{name} {getattr(found, name)}, expected {value}"
    tree = (found.data_section or 0) - (found.file_content or 0)
    if tree != facts.node_count * record_bytes + DATA_SECTION_SEPARATOR:
        return f"data section {tree} bytes into the file, expected after the search tree"
    return ""


class RecordFinder:
    """Answers which record of a MaxMind DB file holds an address, on the file's open
    ``maxminddb`` C reader. Open it with :func:`open_finder`."""

    __slots__ = ("_handle", "_lookup", "_mapped_ipv4", "_reader")

    def __init__(self, reader: Any, handle: int, lookup: Callable[..., Any],
                 ip_version: int) -> None:
        self._reader = reader  # keeps the handle's owner alive
        self._handle = ctypes.c_void_p(handle)
        self._lookup = lookup
        # libmaxminddb answers an IPv4 lookup in an IPv6 tree with the netmask in IPv6 bits
        # (96 + n); the extension subtracts 96 (0 when there is no IPv4 subtree), as here.
        self._mapped_ipv4 = ip_version == 6

    def find_ipv4(self, address: int) -> Found | None:
        """The record holding the IPv4 ``address`` (an int) and its network's prefix length
        in IPv4 bits, as ``get_with_prefix_len`` gives it; None when libmaxminddb reports an
        error (the caller then asks the reader, which raises what it raises)."""
        error = ctypes.c_int()  # not shared: a second thread must not see this call's error
        try:
            result = self._lookup(self._handle,
                                  _IN4_HEAD + address.to_bytes(4, "big") + _IN4_TAIL,
                                  ctypes.byref(error))
        except (ctypes.ArgumentError, OverflowError, TypeError):  # never on a request's way
            return None
        if error.value:
            return None
        netmask = result.netmask
        if self._mapped_ipv4:
            netmask = netmask - 96 if netmask >= 96 else 0
        return (result.entry.offset if result.found_entry else None), netmask

    def find_ipv6(self, packed: bytes) -> Found | None:
        """The record holding the IPv6 address ``packed`` (16 bytes, ``inet_pton``) and its
        prefix length; None on a libmaxminddb error (an IPv6 address in an IPv4 file)."""
        if len(packed) != 16:
            return None
        error = ctypes.c_int()
        try:
            result = self._lookup(self._handle, _IN6_HEAD + packed + _IN6_TAIL,
                                  ctypes.byref(error))
        except (ctypes.ArgumentError, TypeError):
            return None
        if error.value:
            return None
        return (result.entry.offset if result.found_entry else None), result.netmask


def open_finder(reader: Any, facts: FileFacts,
                load: Callable[[], Callable[..., Any]] = load_lookup) -> RecordFinder:
    """A :class:`RecordFinder` on ``reader``'s handle, checked against the reader itself;
    :class:`Unavailable` says why there is none."""
    if not sys.platform.startswith("linux"):
        raise Unavailable(f"sockaddr layout and /proc/self/mem of {sys.platform} not known "
                          "here: Linux only")
    if facts.ip_version not in (4, 6):
        raise Unavailable(f"ip_version {facts.ip_version} in the metadata: expected 4 or 6")
    lookup = load()
    finder = RecordFinder(reader, borrow_handle(reader, facts), lookup, facts.ip_version)
    wrong = agrees_with(finder, reader.get_with_prefix_len)
    if wrong:
        raise Unavailable(f"MMDB_lookup_sockaddr and the reader disagree: {wrong}")
    return finder


# Addresses whose answers, compared between a finder and the reader, would show a result or
# sockaddr layout unlike the one assumed: public addresses in big and small networks,
# private, reserved and IPv6 ones (some with a record in any City file, some without).
PROBES = ("1.1.1.1", "8.8.8.8", "81.2.69.160", "2.125.160.216", "10.0.0.1", "127.0.0.1",
          "240.0.0.1", "255.255.255.255", "0.0.0.0", "2001:4860:4860::8888", "::1",
          "::ffff:8.8.8.8")


def agrees_with(finder: RecordFinder, get_with_prefix_len: Callable[[str], tuple[Any, int]],
                probes: Iterable[str] = PROBES) -> str:
    """"" when ``finder`` and a ``maxminddb`` reader agree on whether each of ``probes`` has a
    record and on its prefix length, else the first difference."""
    for ip in probes:
        try:
            record, prefix_len = get_with_prefix_len(ip)
        except ValueError:  # an IPv6 address in an IPv4 file
            record, prefix_len = None, -1
        if ":" in ip:
            found = finder.find_ipv6(socket.inet_pton(socket.AF_INET6, ip))
        else:
            found = finder.find_ipv4(int.from_bytes(socket.inet_aton(ip), "big"))
        if found is None:
            if prefix_len != -1:
                return f"{ip}: MMDB_lookup_sockaddr failed where the reader did not"
            continue
        offset, length = found
        if (offset is None) != (record is None) or length != prefix_len:
            return (f"{ip}: {'no record' if offset is None else 'a record'}, /{length} from "
                    f"MMDB_lookup_sockaddr against {'no record' if record is None else 'a record'}"
                    f", /{prefix_len} from the reader")
    return ""
