"""Configuration: sources in order, and a clear message for every bad value."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from proxy import config
from proxy.config import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_bundled_config_toml_documents_every_key_with_its_default() -> None:
    loaded = config.load(REPO / "config.toml", environ={})
    assert loaded == config.Config()
    assert loaded.context == config.Config().context
    text = (REPO / "config.toml").read_text()
    for section, cls in config.SECTIONS.items():
        assert f"[{section}]" in text
        for f in dataclasses.fields(cls):
            assert f"\n{f.name} = " in text, f"config.toml does not document {section}.{f.name}"


def test_environment_overrides_file_and_flags_override_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[upstream]\nurl = "http://file:1"\n[server]\nport = 1111\nworkers = 3\n')
    loaded = config.load(path, environ={"KAIROS_SERVER_PORT": "2222",
                                        "KAIROS_UPSTREAM_URL": "http://env:2"},
                         overrides={"upstream.url": "http://flag:3"})
    assert loaded.upstream.url == "http://flag:3"
    assert loaded.server.port == 2222
    assert loaded.server.workers == 3


def test_list_values_from_the_environment() -> None:
    loaded = config.load(None, environ={"KAIROS_SERVER_TRUSTED_PROXIES": "10.0.0.0/8, ::1",
                                        "KAIROS_COOKIES_SECRETS": '["0123456789abcdef0"]'})
    assert [str(n) for n in loaded.server.trusted_proxies] == ["10.0.0.0/8", "::1/128"]
    assert loaded.cookies.secrets == ("0123456789abcdef0",)


def test_resolved_config_survives_the_trip_to_the_workers() -> None:
    loaded = config.load(None, environ={"KAIROS_SERVER_TRUSTED_PROXIES": "10.0.0.0/8"})
    assert config.from_json(config.to_json(loaded)) == loaded


def test_context_section_from_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[context]\nvisit_timeout_minutes = 45\n[context.date_ranges]\n'
                    'black-friday = ["2026-11-27", "2026-11-30"]\n')
    loaded = config.load(path, environ={"KAIROS_CONTEXT_HONOUR_DNT": "true"})
    assert loaded.context.visit_timeout_minutes == 45
    assert loaded.context.honour_dnt is True
    assert [r.name for r in loaded.context.date_ranges] == ["black-friday"]
    assert config.from_json(config.to_json(loaded)).context == loaded.context
    path.write_text("[context]\nvisit_timeout_minutes = -3\n")
    with pytest.raises(ConfigError, match=r"context\.visit_timeout_minutes = -3 is not valid"):
        config.load(path, environ={})


@pytest.mark.parametrize("overrides,message", [
    ({"server.port": "eighty"}, "command line: server.port = 'eighty' is not valid: "
                                "expected a whole number"),
    ({"server.port": 70000}, "server.port = 70000 is not valid: expected a port number"),
    ({"upstream.url": "ftp://x"}, "upstream.url = 'ftp://x' is not valid: expected an http://"),
    ({"upstream.read_timeout": 0}, "upstream.read_timeout = 0.0 is not valid: expected seconds"),
    ({"server.workers": 0}, "server.workers = 0 is not valid: expected a number from 1"),
    ({"server.trusted_proxies": "not-a-net"}, "expected a list of IP networks"),
    ({"store.url": "http://redis"}, "store.url = 'http://redis' is not valid"),
    ({"cookies.secrets": "short"}, "secrets of at least 16 characters"),
    ({"cookies.max_age_days": 800}, "13 months at most"),
    ({"admin.prefix": "kairos"}, 'admin.prefix = \'kairos\' is not valid: expected a path'),
    ({"server.colour": "blue"}, "server.colour: unknown key; valid keys in [server]: host"),
    ({"cache.max_mb": 0}, "cache.max_mb = 0 is not valid: expected megabytes from 1 to 4096"),
    ({"cache.max_mb": 5000}, "cache.max_mb = 5000 is not valid: expected megabytes"),
    ({"cache.serve_stale_seconds": -1}, "cache.serve_stale_seconds = -1 is not valid: "
                                        "expected seconds from 0"),
    ({"cache.enabled": "maybe"}, "cache.enabled = 'maybe' is not valid: expected true or false"),
])
def test_bad_values_name_key_value_and_what_is_valid(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(None, environ={}, overrides=overrides)
    assert message in str(info.value)


def test_bad_file_errors_name_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[server\nport = 1")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
        config.load(broken, environ={})
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[srever]\nport = 1\n")
    with pytest.raises(ConfigError, match=r"unknown section \[srever\]; valid sections"):
        config.load(unknown, environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "missing.toml", environ={})


def test_environment_errors_say_they_come_from_the_environment() -> None:
    with pytest.raises(ConfigError, match=r"environment: server\.workers = 'many'"):
        config.load(None, environ={"KAIROS_SERVER_WORKERS": "many"})


def test_cache_section_defaults_file_and_environment(tmp_path: Path) -> None:
    defaults = config.Config().cache
    assert (defaults.enabled, defaults.max_mb, defaults.serve_stale_seconds) == (True, 64, 60)
    path = tmp_path / "c.toml"
    path.write_text("[cache]\nmax_mb = 128\nserve_stale_seconds = 0\n")
    loaded = config.load(path, environ={"KAIROS_CACHE_ENABLED": "false"})
    assert loaded.cache == config.CacheConfig(enabled=False, max_mb=128, serve_stale_seconds=0)
    assert config.from_json(config.to_json(loaded)).cache == loaded.cache
    with pytest.raises(ConfigError, match=r"environment: cache\.max_mb = 'lots'"):
        config.load(None, environ={"KAIROS_CACHE_MAX_MB": "lots"})
