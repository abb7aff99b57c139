"""The traffic-source tables: loaded once from ``data/sources.toml``, extended from config.

The tables are data rather than code so that a site can teach Kairos its own partners,
newsletters or regional search engines without a release: ``[context.sources]`` in
config.toml has the same four tables (``click_ids``, ``link_ids``, ``mediums``, ``hosts``)
and its entries are added to the built-in ones, winning on equal keys. Everything is
validated here, at start-up, so that :mod:`proxy.context.source` can trust the table on the
request path.
"""

from __future__ import annotations

import tomllib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

CLASSES = ("search", "social", "email", "paid", "affiliate", "internal", "direct", "other")
TABLES = ("click_ids", "link_ids", "mediums", "hosts")
_DATA = Path(__file__).with_name("data") / "sources.toml"


@dataclass(frozen=True, slots=True)
class HostEntry:
    """What a referrer host means: its class, a short name, where the search term is."""

    cls: str
    name: str
    params: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SourceTable:
    """The merged, validated tables. Host keys are split: exact hosts and ``name.*``."""

    click_ids: Mapping[str, str]  # parameter -> ad network (paid)
    link_ids: Mapping[str, tuple[str, str]]  # parameter -> (class, name)
    mediums: Mapping[str, str]
    hosts: Mapping[str, HostEntry]
    wildcard_hosts: Mapping[str, HostEntry]
    by_name: Mapping[str, str] = field(init=False, default=None)  # type: ignore[assignment]
    # entry name -> class, to classify a bare utm_source such as "facebook"
    cache: OrderedDict = field(init=False, default=None, compare=False, repr=False)  # type: ignore[assignment]
    # classifications already made with this table, oldest first (see proxy.context.source)

    def __post_init__(self) -> None:
        names: dict[str, str] = {}
        for entry in (*self.wildcard_hosts.values(), *self.hosts.values()):
            names.setdefault(entry.name, entry.cls)
        object.__setattr__(self, "by_name", MappingProxyType(names))
        object.__setattr__(self, "cache", OrderedDict())


def load_table(
    extra: Mapping[str, Any] | None = None, where: str = "context.sources"
) -> SourceTable:
    """The built-in tables with ``extra`` (same shape as data/sources.toml) merged over them.

    Raises ``ValueError`` naming the key, the bad value and what would be valid.
    """
    base = _builtin()
    if not extra:
        return base
    if not isinstance(extra, Mapping):
        raise ValueError(f"{where} = {extra!r} is not valid: expected a table with "
                         f"{', '.join(TABLES)}")
    parsed = _parse(extra, where)
    return SourceTable(
        click_ids=MappingProxyType({**base.click_ids, **parsed.click_ids}),
        link_ids=MappingProxyType({**base.link_ids, **parsed.link_ids}),
        mediums=MappingProxyType({**base.mediums, **parsed.mediums}),
        hosts=MappingProxyType({**base.hosts, **parsed.hosts}),
        wildcard_hosts=MappingProxyType({**base.wildcard_hosts, **parsed.wildcard_hosts}),
    )


@cache
def _builtin() -> SourceTable:
    with _DATA.open("rb") as fh:
        return _parse(tomllib.load(fh), str(_DATA))


def _parse(raw: Mapping[str, Any], where: str) -> SourceTable:
    for key in raw:
        if key not in TABLES:
            raise ValueError(f"{where}.{key} is not a known table: expected one of "
                             f"{', '.join(TABLES)}")
    click_ids = {
        _name(k, f"{where}.click_ids", "a query parameter name").lower():
            _name(v, f"{where}.click_ids.{k}", "an ad network name such as \"google-ads\"")
        for k, v in _table(raw, "click_ids", where).items()
    }
    link_ids = {}
    for key, value in _table(raw, "link_ids", where).items():
        param = _name(key, f"{where}.link_ids", "a query parameter name").lower()
        cls, _, name = str(value).partition("/")
        link_ids[param] = (_cls(cls, f"{where}.link_ids.{key}"),
                           _name(name, f"{where}.link_ids.{key}", "\"class/name\""))
    mediums = {}
    for key, value in _table(raw, "mediums", where).items():
        medium = _name(key, f"{where}.mediums", "a utm_medium value").lower()
        mediums[medium] = _cls(value, f"{where}.mediums.{key}")
    hosts: dict[str, HostEntry] = {}
    wildcards: dict[str, HostEntry] = {}
    for key, value in _table(raw, "hosts", where).items():
        at = f"{where}.hosts.{key!r}"
        host = key.strip().lower()
        label = host[:-2] if host.endswith(".*") else host
        if not label or not all(part and _is_label(part) for part in label.split(".")):
            raise ValueError(f"{at} is not valid: expected a host name such as \"bing.com\" "
                             f"or \"google.*\"")
        entry = _host_entry(value, at)
        if host.endswith(".*"):
            if "." in label:
                raise ValueError(f"{at} is not valid: a \"name.*\" key takes one label, "
                                 f"such as \"google.*\"")
            wildcards[label] = entry
        else:
            hosts[host] = entry
    return SourceTable(
        click_ids=MappingProxyType(click_ids),
        link_ids=MappingProxyType(link_ids),
        mediums=MappingProxyType(mediums),
        hosts=MappingProxyType(hosts),
        wildcard_hosts=MappingProxyType(wildcards),
    )


def _table(raw: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}.{key} = {value!r} is not valid: expected a table")
    return value


def _host_entry(value: Any, at: str) -> HostEntry:
    if not isinstance(value, Mapping):
        raise ValueError(f"{at} = {value!r} is not valid: expected a table like "
                         f"{{ class = \"search\", name = \"brave\", params = [\"q\"] }}")
    unknown = set(value) - {"class", "name", "params"}
    if unknown:
        raise ValueError(f"{at} has unknown keys {sorted(unknown)}: expected class, name, "
                         f"params")
    cls = _cls(value.get("class"), f"{at}.class")
    name = _name(value.get("name"), f"{at}.name", "a short name such as \"bing\"")
    params = value.get("params", [])
    if not isinstance(params, list | tuple) or not all(
        isinstance(p, str) and p and len(p) <= 40 for p in params
    ):
        raise ValueError(f"{at}.params = {params!r} is not valid: expected a list of query "
                         f"parameter names such as [\"q\"]")
    return HostEntry(cls=cls, name=name, params=tuple(params))


def _cls(value: Any, at: str) -> str:
    if value not in CLASSES or value in ("internal", "direct"):
        valid = ", ".join(c for c in CLASSES if c not in ("internal", "direct"))
        raise ValueError(f"{at} = {value!r} is not valid: expected one of {valid}")
    return str(value)


def _name(value: Any, at: str, valid: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 60:
        raise ValueError(f"{at} = {value!r} is not valid: expected {valid}")
    return value.strip()


def _is_label(part: str) -> bool:
    return len(part) <= 63 and all(c.isalnum() or c == "-" for c in part)
