"""Pytest fixtures for tests that need a real Redis: one embedded Valkey per test session.

Use from tests/conftest.py with ``pytest_plugins = ["tests.store_fixtures"]`` (or import the
fixtures by name). ``embedded_valkey`` is the running server (an ``EmbeddedValkey``, as
``kairos serve`` starts it); ``store_url`` gives each test that server emptied beforehand
(FLUSHALL), which costs a millisecond instead of a server start.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from proxy.store.embedded import EmbeddedValkey


@pytest.fixture(scope="session")
def embedded_valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedValkey]:
    """A Valkey server for the whole session, on a unix socket in a temporary folder."""
    server = EmbeddedValkey(tmp_path_factory.mktemp("valkey"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def store_url(embedded_valkey: EmbeddedValkey) -> str:
    """URL (unix://) of the session's Valkey, emptied for this test."""
    with redis.Redis.from_url(embedded_valkey.url) as client:
        client.flushall()
    return embedded_valkey.url
