"""The results endpoints through the real ASGI stack (httpx.ASGITransport) and a real Valkey:
the token in every form, the formats, and the errors an admin can meet."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import httpx
import pytest

from experiments.model import parse_experiment
from proxy.config import StoreConfig
from proxy.results.auth import COOKIE_NAME, session_value
from proxy.results.endpoints import ResultsEndpoints
from proxy.results.export import SCHEMA
from proxy.store import Store
from proxy.store.client import connect
from proxy.store.embedded import _free_port
from proxy.store.events import Conversion, Exposure
from proxy.store.experiment_counts import CountsReader
from tests.store_fixtures import embedded_valkey, store_url

__all__ = ["embedded_valkey", "store_url"]  # fixtures, imported to be found by pytest

pytestmark = pytest.mark.timeout(30)
TOKEN = "s3cret-admin-token"
PREFIX = "/_kairos/"
DAY = "2026-11-22"
NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
HERO = parse_experiment({
    "id": "hero", "arms": [{"id": "control", "weight": 0.5}, {"id": "B", "weight": 0.5}],
    "goals": [{"id": "checkout", "kind": "page", "url": "/done", "primary": True}]}, "test")

Client = httpx.AsyncClient


def with_client(url: str, token: str, test: Callable[[Client], Awaitable[None]]) -> None:
    async def body() -> None:
        store = await Store.open(StoreConfig(flush_interval=60), url)
        for arm, conversions in (("control", 30), ("B", 45)):
            for _ in range(300):
                store.record(Exposure("hero", arm, DAY, 0.5))
            for _ in range(conversions):
                store.record(Conversion.binary("hero", "checkout", arm, DAY))
        assert await store.flush()
        endpoints = ResultsEndpoints(store, lambda: {"hero": HERO}, token, PREFIX,
                                     clock=lambda: NOW)
        transport = httpx.ASGITransport(app=endpoints)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://kairos") as client:
            await test(client)
        await store.close()

    asyncio.run(body())


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_without_a_configured_token_everything_is_refused_with_how_to_fix(
        store_url: str) -> None:
    async def test(client: Client) -> None:
        for path in ("results", "results/hero", "results.json", "results/hero.csv"):
            r = await client.get(PREFIX + path, headers=bearer(""))
            assert r.status_code == 401, path
            assert "admin.token" in r.text and "KAIROS_ADMIN_TOKEN" in r.text
        assert (await client.get(PREFIX + "results.json")).json()["status"] == 401

    with_client(store_url, "", test)


def test_missing_or_wrong_tokens_get_401_and_the_right_one_200(store_url: str) -> None:
    async def test(client: Client) -> None:
        r = await client.get(PREFIX + "results")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert "?token=" in r.text and r.headers["content-type"].startswith("text/html")
        for headers in (bearer("wrong"), bearer(TOKEN + "x"), bearer(TOKEN[:-1]),
                        {"cookie": f"{COOKIE_NAME}={session_value('old-token')}"}):
            r = await client.get(PREFIX + "results/hero", headers=headers)
            assert r.status_code == 401 and "not the configured one" in r.text, headers
        r = await client.get(PREFIX + "results", headers=bearer())
        assert r.status_code == 200 and 'data-experiment="hero"' in r.text
        assert "default-src 'none'" in r.headers["content-security-policy"]
        r = await client.get(PREFIX + "results/hero", headers=bearer())
        assert r.status_code == 200
        assert r.text.count('class="series"') == 2 and "<script" not in r.text

    with_client(store_url, TOKEN, test)


def test_query_token_sets_a_session_cookie_and_leaves_the_address_bar(store_url: str) -> None:
    async def test(client: Client) -> None:
        r = await client.get(PREFIX + "results/hero", params={"token": "nope"})
        assert r.status_code == 401
        r = await client.get(PREFIX + "results/hero", params={"token": TOKEN, "since": DAY})
        assert r.status_code == 303
        assert r.headers["location"] == f"{PREFIX}results/hero?since={DAY}"
        cookie = r.headers["set-cookie"]
        for flag in ("HttpOnly", "SameSite=Strict", f"Path={PREFIX}results", "Max-Age="):
            assert flag in cookie
        assert TOKEN not in cookie
        value = cookie.split(";")[0]
        r = await client.get(r.headers["location"], headers={"cookie": value})
        assert r.status_code == 200 and 'data-goal="checkout"' in r.text

    with_client(store_url, TOKEN, test)


def test_json_and_csv_exports(store_url: str) -> None:
    async def test(client: Client) -> None:
        doc = (await client.get(PREFIX + "results.json", headers=bearer())).json()
        assert doc["schema"] == SCHEMA and [e["id"] for e in doc["experiments"]] == ["hero"]
        one = (await client.get(PREFIX + "results/hero.json", headers=bearer())).json()
        assert one["experiments"][0]["arms"][1] == {"id": "B", "planned_weight": 0.5,
                                                    "units": 300}
        r = await client.get(PREFIX + "results/hero.csv", headers=bearer())
        assert r.headers["content-disposition"] == 'attachment; filename="hero-daily.csv"'
        assert r.text.splitlines()[1:] == [f"hero,{DAY},control,300,checkout,30,30,30",
                                           f"hero,{DAY},B,300,checkout,45,45,45"]
        r = await client.get(PREFIX + "results.csv", headers=bearer())
        assert r.status_code == 200 and len(r.text.splitlines()) == 3

    with_client(store_url, TOKEN, test)


def test_errors_say_what_and_what_is_valid(store_url: str) -> None:
    async def test(client: Client) -> None:
        r = await client.get(PREFIX + "results/nope.json", headers=bearer())
        assert r.status_code == 404
        assert r.json()["error"] == "no experiment 'nope' is defined; defined: hero"
        r = await client.get(PREFIX + "results/hero", params={"since": "yesterday"},
                             headers=bearer())
        assert r.status_code == 400 and "?since" in r.text
        r = await client.post(PREFIX + "results/hero", headers=bearer())
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"

    with_client(store_url, TOKEN, test)


def test_a_store_that_is_down_answers_503() -> None:
    async def body() -> None:
        client = connect(f"redis://127.0.0.1:{_free_port()}", timeout=0.3)
        endpoints = ResultsEndpoints(CountsReader(client), lambda: {"hero": HERO}, TOKEN, PREFIX)
        asgi = httpx.ASGITransport(app=endpoints)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=asgi,
                                     base_url="http://kairos") as http:
            r = await http.get(PREFIX + "results.json", headers=bearer())
        assert r.status_code == 503 and "cannot connect" in json.loads(r.text)["error"]
        await client.aclose()

    asyncio.run(body())


@pytest.mark.parametrize("path, handled", [
    ("/_kairos/results", True), ("/_kairos/results/", True), ("/_kairos/results.json", True),
    ("/_kairos/results.csv", True), ("/_kairos/results/hero.csv", True),
    ("/_kairos/resultsx", False), ("/_kairos/health", False), ("/results", False),
])
def test_handles_exactly_the_results_paths(path: str, handled: bool) -> None:
    endpoints = ResultsEndpoints(CountsReader(None), dict, TOKEN, PREFIX)  # type: ignore[arg-type]
    assert endpoints.handles(path) is handled
    assert set(endpoints.routes) == {"results", "results.json", "results.csv"}
