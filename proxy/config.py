"""Configuration: parsed once, at start-up, into frozen dataclasses.

Sources, later ones winning:

1. the defaults below (a proxy that works on loopback with the embedded store);
2. the TOML file (``config.toml`` by default, every key documented there);
3. environment variables ``KAIROS_<SECTION>_<KEY>`` (``KAIROS_UPSTREAM_URL``);
4. command-line flags of ``kairos serve`` (``--upstream``, ``--port``, ...).

Every value is validated here, so that a bad value stops start-up with a message that names
the key, the bad value and what would be valid; nothing downstream re-checks it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .context.settings import ContextSettings, parse_settings

ENV_PREFIX = "KAIROS_"
RESOLVED_ENV = "KAIROS_RESOLVED_CONFIG"
CONTEXT = "context"  # how `kairos serve` hands the config to its workers

UPSTREAM_CLIENTS = ("aiohttp", "h1")   # see proxy/upstream.py for how they compare

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message says which and why."""


@dataclass(frozen=True)
class UpstreamConfig:
    url: str = "http://127.0.0.1:8081"
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    write_timeout: float = 30.0
    pool_timeout: float = 5.0
    # Time from sending the request to having the upstream's response headers.
    headers_deadline: float = 30.0
    # Idle keep-alive to the origin; keep it below the origin's own keep-alive timeout
    # (nginx: 75 s, uvicorn: 5 s) so the proxy never reuses a socket the origin is closing.
    keepalive_expiry: float = 4.0
    max_connections: int = 512
    # HTTP client to the origin: "h1" (Kairos's own, proxy/upstream_h1.py; about half the CPU
    # per request, bench/README.md) or "aiohttp" (the previous client, kept as a fallback).
    client: str = "h1"


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    # Peers whose X-Forwarded-For / Forwarded / CDN headers are believed (P5).
    trusted_proxies: tuple[Network, ...] = (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    )
    # In-flight requests per worker before answering 503 with Retry-After.
    # Seconds a request head (request line and header fields) may take to arrive in full,
    # from its first byte or from the connection; then 408 and the connection is closed.
    header_timeout: float = 15.0
    max_concurrent_requests: int = 1024
    retry_after_seconds: int = 2
    # Name announced in the Via header.
    via_name: str = "kairos"
    log_level: str = "info"


@dataclass(frozen=True)
class LimitsConfig:
    # Largest HTML page (wire size and decoded size each) that is buffered for rewriting;
    # larger pages stream through untouched (F8).
    max_rewrite_bytes: int = 2 * 1024 * 1024
    # Pages buffered for rewriting at once per worker; beyond it pages stream through (F9).
    max_buffered_pages: int = 64


@dataclass(frozen=True)
class StoreConfig:
    # Empty: start an embedded Valkey. Otherwise redis://, rediss:// or unix:// URL.
    url: str = ""
    # Several comma-separated redis:// URLs, or cluster = true, use Redis Cluster.
    cluster: bool = False
    data_dir: str = ".kairos/valkey"
    socket_timeout: float = 0.5
    event_buffer_size: int = 100_000
    flush_interval: float = 0.5
    flush_batch_size: int = 5_000
    # Seconds between refreshes of each worker's copy of the outside signals.
    signals_interval: float = 5.0


@dataclass(frozen=True)
class CookiesConfig:
    visitor: str = "kairos_v"
    # HMAC keys, newest first; the first signs, all verify (rotation). Empty: a key is
    # generated into the store's data folder (fine for one machine, not for several).
    secrets: tuple[str, ...] = ()
    max_age_days: int = 395


@dataclass(frozen=True)
class AdminConfig:
    prefix: str = "/_kairos/"
    token: str = ""


@dataclass(frozen=True)
class RulesConfig:
    folder: str = "rules"


@dataclass(frozen=True)
class ExperimentsConfig:
    # Share of visitors (0..1) who see no experiment and no personalisation at all.
    holdout: float = 0.0
    # How long a page's conversion-beacon token stays valid.
    beacon_ttl_seconds: int = 86_400
    # How often each worker reads published bandit weights and offers to recompute them.
    bandit_interval: float = 5.0


@dataclass(frozen=True)
class CacheConfig:
    # Keep origin HTML pages that the origin marks cacheable (proxy/cache/), per worker.
    enabled: bool = True
    # Memory per worker for kept pages (bodies, headers and bookkeeping), in MB.
    max_mb: int = 64
    # Upper bound on the origin's stale-while-revalidate and stale-if-error, in seconds.
    serve_stale_seconds: int = 60
    # Memory per worker for pages that may not be kept but come back byte for byte the same,
    # so each is parsed once (proxy/page_memo.py), in MB; 0 turns it off. Independent of
    # ``enabled``: nothing is served from it that the origin did not just send.
    repeated_pages_mb: int = 16


def _default_context() -> ContextSettings:
    return parse_settings({}, "")


@dataclass(frozen=True)
class Config:
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    cookies: CookiesConfig = field(default_factory=CookiesConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    rules: RulesConfig = field(default_factory=RulesConfig)
    experiments: ExperimentsConfig = field(default_factory=ExperimentsConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    # [context] is nested (tables of stages, ranges, sources), so the visitor-context
    # package validates it itself; the raw table travels along for the worker processes.
    context: ContextSettings = field(default_factory=_default_context, compare=False)
    context_table: str = field(default="{}", compare=False)  # JSON of [context] as given

    @property
    def upstream_origin(self) -> tuple[str, str, int]:
        """(scheme, host, port) of the upstream, for recognising absolute origin URLs."""
        parts = urlsplit(self.upstream.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return parts.scheme, (parts.hostname or ""), port


SECTIONS: dict[str, type] = {
    "upstream": UpstreamConfig, "server": ServerConfig, "limits": LimitsConfig,
    "store": StoreConfig, "cookies": CookiesConfig, "admin": AdminConfig, "rules": RulesConfig,
    "experiments": ExperimentsConfig, "cache": CacheConfig,
}


def load(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the Config from file, environment and flag overrides (``"server.port": 8080``).

    A missing ``path`` falls back to ``config.toml`` in the working directory when present.
    """
    environ = os.environ if environ is None else environ
    raw: dict[str, dict[str, Any]] = {}
    origin: dict[tuple[str, str], str] = {}
    file_path = _config_path(path)
    if file_path is not None:
        _merge(raw, origin, _read_toml(file_path), str(file_path))
    _merge(raw, origin, _from_environ(environ), "environment")
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        raw.setdefault(section, {})[key] = value
        origin[(section, key)] = "command line"
    return _build(raw, origin)


def to_json(config: Config) -> str:
    """Serialise for the worker processes, which rebuild it with :func:`from_json`."""
    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
            return str(value)
        return value

    resolved: dict[str, Any] = {
        s: {k: plain(v) for k, v in dataclasses.asdict(getattr(config, s)).items()}
        for s in SECTIONS
    }
    resolved[CONTEXT] = json.loads(config.context_table)
    return json.dumps(resolved)


def from_json(text: str) -> Config:
    raw = json.loads(text)
    return _build(raw, {})


# -- reading ----------------------------------------------------------------------------------

def _config_path(path: str | Path | None) -> Path | None:
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist (pass --config with a TOML file)")
        return p
    default = Path("config.toml")
    return default if default.is_file() else None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _from_environ(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    context_prefix = f"{ENV_PREFIX}{CONTEXT}_".upper()
    for name, value in environ.items():   # KAIROS_CONTEXT_HONOUR_DNT=true, JSON for tables
        if name.startswith(context_prefix):
            key = name[len(context_prefix):].lower()
            found.setdefault(CONTEXT, {})[key] = _env_value(value)
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            name = f"{ENV_PREFIX}{section}_{f.name}".upper()
            if name in environ:
                found.setdefault(section, {})[f.name] = environ[name]
    return found


def _env_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _merge(raw: dict, origin: dict, new: dict[str, Any], source: str) -> None:
    for section, table in new.items():
        if section == CONTEXT:
            raw.setdefault(CONTEXT, {}).update(table)
            origin[(CONTEXT, "")] = source
            continue
        if section not in SECTIONS:
            raise ConfigError(
                f"{source}: unknown section [{section}]; valid sections: "
                f"{', '.join([*SECTIONS, CONTEXT])}"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{section}] must be a table")
        for key, value in table.items():
            raw.setdefault(section, {})[key] = value
            origin[(section, key)] = source


# -- validation -------------------------------------------------------------------------------

def _build(raw: dict[str, dict[str, Any]], origin: dict[tuple[str, str], str]) -> Config:
    context_raw = raw.get(CONTEXT, {})
    try:
        context = parse_settings(context_raw, origin.get((CONTEXT, ""), ""))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    sections: dict[str, Any] = {"context": context,
                                "context_table": json.dumps(context_raw, default=str)}
    for section, cls in SECTIONS.items():
        values = raw.get(section, {})
        known = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in values.items():
            where = f"{origin.get((section, key), 'config')}: {section}.{key}"
            if key not in known:
                raise ConfigError(
                    f"{where}: unknown key; valid keys in [{section}]: {', '.join(known)}"
                )
            kwargs[key] = _coerce(value, known[key].type, where)
        sections[section] = cls(**kwargs)
    config = Config(**sections)
    _check(config, origin)
    return config


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    kind = _resolve(annotation)
    try:
        if kind is bool:
            return _to_bool(value)
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind is str:
            if not isinstance(value, str):
                raise ValueError
            return value
        if kind == "networks":
            items = _to_list(value)
            return tuple(ipaddress.ip_network(str(v).strip(), strict=False) for v in items)
        if kind == "strings":
            return tuple(str(v) for v in _to_list(value))
    except (ValueError, TypeError):
        pass
    expected = {bool: "true or false", int: "a whole number", float: "a number",
                str: "a string", "networks": "a list of IP networks like \"10.0.0.0/8\"",
                "strings": "a list of strings"}[kind]
    raise ConfigError(f"{where} = {value!r} is not valid: expected {expected}")


def _resolve(annotation: str) -> Any:
    """Field annotations are strings here (postponed evaluation); map them to a kind."""
    kinds = {"bool": bool, "int": int, "float": float, "str": str,
             "tuple[Network, ...]": "networks", "tuple[str, ...]": "strings"}
    return kinds[annotation]


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"1", "true", "yes", "on", "0", "false",
                                                     "no", "off"}:
        return value.lower() in {"1", "true", "yes", "on"}
    raise ValueError


def _to_list(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return list(json.loads(text))
        return [v for v in (p.strip() for p in text.split(",")) if v]
    raise ValueError


def _check(config: Config, origin: dict[tuple[str, str], str]) -> None:
    def fail(section: str, key: str, valid: str) -> None:
        value = getattr(getattr(config, section), key)
        where = f"{origin.get((section, key), 'default')}: {section}.{key}"
        raise ConfigError(f"{where} = {value!r} is not valid: expected {valid}")

    up = urlsplit(config.upstream.url)
    if up.scheme not in {"http", "https"} or not up.hostname:
        fail("upstream", "url", "an http:// or https:// URL such as http://127.0.0.1:8081")
    for key in ("connect_timeout", "read_timeout", "write_timeout", "pool_timeout",
                "headers_deadline", "keepalive_expiry"):
        if not 0 < getattr(config.upstream, key) <= 3600:
            fail("upstream", key, "seconds, more than 0 and at most 3600")
    if not 1 <= config.upstream.max_connections <= 100_000:
        fail("upstream", "max_connections", "a number from 1 to 100000")
    if config.upstream.client not in UPSTREAM_CLIENTS:
        fail("upstream", "client", " or ".join(f'"{c}"' for c in UPSTREAM_CLIENTS))
    if not 0 <= config.server.port <= 65535:
        fail("server", "port", "a port number from 0 to 65535")
    if not 1 <= config.server.workers <= 256:
        fail("server", "workers", "a number from 1 to 256")
    if config.server.max_concurrent_requests < 1:
        fail("server", "max_concurrent_requests", "a number of at least 1")
    if config.server.log_level not in {"critical", "error", "warning", "info", "debug"}:
        fail("server", "log_level", "one of critical, error, warning, info, debug")
    if not 1024 <= config.limits.max_rewrite_bytes <= 1024**3:
        fail("limits", "max_rewrite_bytes", "bytes from 1024 to 1073741824")
    if config.limits.max_buffered_pages < 1:
        fail("limits", "max_buffered_pages", "a number of at least 1")
    if config.store.url and any(
        urlsplit(u.strip()).scheme not in {"redis", "rediss", "unix"}
        for u in config.store.url.split(",")
    ):
        fail("store", "url", 'empty (embedded Valkey) or a redis://, rediss:// or unix:// URL')
    if not 0 < config.store.socket_timeout <= 60:
        fail("store", "socket_timeout", "seconds, more than 0 and at most 60")
    if config.store.event_buffer_size < 1:
        fail("store", "event_buffer_size", "a number of at least 1")
    if not 0 < config.store.flush_interval <= 60:
        fail("store", "flush_interval", "seconds, more than 0 and at most 60")
    if not 0 < config.store.signals_interval <= 3600:
        fail("store", "signals_interval", "seconds, more than 0 and at most 3600")
    if config.store.flush_batch_size < 1:
        fail("store", "flush_batch_size", "a number of at least 1")
    if not config.cookies.visitor or not config.cookies.visitor.replace("_", "").isalnum():
        fail("cookies", "visitor", "a cookie name of letters, digits and _")
    if any(len(s) < 16 for s in config.cookies.secrets):
        fail("cookies", "secrets", "secrets of at least 16 characters each")
    if not 1 <= config.cookies.max_age_days <= 395:
        fail("cookies", "max_age_days", "days from 1 to 395 (13 months at most)")
    prefix = config.admin.prefix
    if not (prefix.startswith("/") and prefix.endswith("/") and len(prefix) > 2):
        fail("admin", "prefix", 'a path that starts and ends with "/", such as "/_kairos/"')
    if not 0.0 <= config.experiments.holdout <= 1.0:
        fail("experiments", "holdout", "a share from 0 to 1 (0.05 keeps 5% out)")
    if not 60 <= config.experiments.beacon_ttl_seconds <= 30 * 86_400:
        fail("experiments", "beacon_ttl_seconds", "seconds from 60 to 2592000 (30 days)")
    if not 0 < config.experiments.bandit_interval <= 3600:
        fail("experiments", "bandit_interval", "seconds, more than 0 and at most 3600")
    if not 1 <= config.cache.max_mb <= 4096:
        fail("cache", "max_mb", "megabytes from 1 to 4096 (per worker)")
    if not 0 <= config.cache.serve_stale_seconds <= 86_400:
        fail("cache", "serve_stale_seconds", "seconds from 0 (never serve stale) to 86400")
    if not 0.1 <= config.server.header_timeout <= 600:
        fail("server", "header_timeout", "seconds from 0.1 to 600")
    if not 0 <= config.cache.repeated_pages_mb <= 4096:
        fail("cache", "repeated_pages_mb", "megabytes from 0 (off) to 4096 (per worker)")



def replace(config: Config, dotted: str, value: Any) -> Config:
    """A copy with one already-valid value changed (``"store.url"``), for values Kairos
    derives itself at start-up, such as the embedded store's address."""
    section, _, key = dotted.partition(".")
    changed = dataclasses.replace(getattr(config, section), **{key: value})
    return dataclasses.replace(config, **{section: changed})
