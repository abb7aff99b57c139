"""The ``kairos`` command as operators run it: real processes, real workers, real store."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy.cli import free_port

from .upstream_server import Upstream

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
