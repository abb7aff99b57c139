"""``kairos results`` end to end: counts recorded through the Store into a real Valkey,
definitions from a rules folder, output as table, JSON and CSV; and the exit statuses."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import re
from pathlib import Path

import pytest

from proxy.config import StoreConfig
from proxy.results.cli import add_arguments, main_results
from proxy.results.export import CSV_HEADER, SCHEMA
from proxy.store import Store
from proxy.store.embedded import EmbeddedValkey, _free_port
from proxy.store.events import Conversion, Exposure
from tests.store_fixtures import embedded_valkey, store_url

__all__ = ["embedded_valkey", "store_url"]  # fixtures, imported to be found by pytest

pytestmark = pytest.mark.timeout(30)
D1, D2 = "2026-11-22", "2026-11-23"
RULES = """
[[experiment]]
id = "hero"
pages = ["/"]
arms = [{id = "control", weight = 0.5}, {id = "B", weight = 0.5}]
goals = [{id = "checkout", kind = "page", url = "/checkout/done", primary = true},
         {id = "revenue", kind = "revenue", event = "purchase"}]

[[experiment]]
id = "skewed"
pages = ["/"]
arms = [{id = "control", weight = 0.5}, {id = "B", weight = 0.5}]
goals = [{id = "signup", kind = "custom", event = "signup", primary = true}]
"""


def record(url: str) -> None:
    """hero: 5,000 visitors per arm and day, B converts 8% against 5%; one buyer per arm on
    D1, B's buyer returns on D2. skewed: 1,000 vs 800 visitors on 50/50 weights."""
    async def body() -> None:
        store = await Store.open(StoreConfig(flush_interval=60), url)
        for day in (D1, D2):
            for arm, conversions in (("control", 250), ("B", 400)):
                for _ in range(5000):
                    store.record(Exposure("hero", arm, day, 0.5))
                for _ in range(conversions):
                    store.record(Conversion.binary("hero", "checkout", arm, day))
        store.record(Conversion.revenue("hero", "revenue", "control", D1, 10.0, 0.0))
        store.record(Conversion.revenue("hero", "revenue", "B", D1, 10.0, 0.0))
        store.record(Conversion.revenue("hero", "revenue", "B", D2, 5.0, 10.0))
        for arm, n in (("control", 1000), ("B", 800)):
            for _ in range(n):
                store.record(Exposure("skewed", arm, D1, 0.5))
            for _ in range(n // 10):
                store.record(Conversion.binary("skewed", "signup", arm, D1))
        assert await store.flush()
        await store.close()

    asyncio.run(body())


@pytest.fixture
def setup(store_url: str, tmp_path: Path) -> tuple[str, Path]:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "experiments.toml").write_text(RULES)
    (tmp_path / "config.toml").write_text('[rules]\nfolder = "%s"\n' % (tmp_path / "rules"))
    record(store_url)
    return store_url, tmp_path


def results(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="kairos results")
    add_arguments(parser)
    return main_results(parser.parse_args(list(argv)))


def test_table_says_the_decision_and_puts_a_mismatch_first(
        setup: tuple[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    url, folder = setup
    assert results("--store", url, "--config", str(folder / "config.toml")) == 0
    out = capsys.readouterr().out
    hero, skewed = out.split("\nskewed: ")
    assert hero.startswith("hero: running, fixed weights 50% / 50%, 2 days (2026-11-22 to "
                           "2026-11-23), 20,000 visitors")
    assert re.search(r"Decision: B beats control on checkout: \+60\.0% \(97\.5% CI "
                     r"\+\d+\.\d% to \+\d+\.\d%\), sequential p [=<] 0\.0\d+", hero), hero
    assert re.search(r"control\s+10,000\s+500\s+5\.00%\s+control", hero)
    assert re.search(r"B\s+10,000\s+800\s+8\.00%\s+\+60\.0%", hero)
    assert re.search(r"B\s+10,000\s+2\s+0\.00\s+\+50\.0%", hero)  # revenue: 15 / 10,000
    banner = skewed.index("SAMPLE RATIO MISMATCH: DO NOT TRUST")
    assert banner < skewed.index("Decision: sample ratio mismatch: do not trust")


def test_json_follows_the_schema_and_carries_the_daily_counts(
        setup: tuple[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    url, folder = setup
    assert results("hero", "--format", "json", "--store", url, "--rules",
                   str(folder / "rules"), "--config", str(folder / "config.toml")) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == SCHEMA and doc["window"] == {"since": None, "until": None}
    (hero,) = doc["experiments"]
    assert hero["decision"]["kind"] == "ship" and hero["decision"]["arm"] == "B"
    assert hero["decision"]["trustworthy"] is True
    assert hero["arms"] == [{"id": "control", "planned_weight": 0.5, "units": 10_000},
                            {"id": "B", "planned_weight": 0.5, "units": 10_000}]
    assert hero["days"] == [D1, D2]
    assert hero["daily"][1]["goals"]["revenue"] == {
        "B": {"conversions": 1, "sum": 5.0, "sum_squares": 125.0}}
    arms = {(a["arm"], a["goal"]): a for a in hero["summary"]["arms"]}
    assert arms[("B", "revenue")]["value"] == pytest.approx(15 / 10_000)


def test_csv_has_one_row_per_day_arm_and_goal(
        setup: tuple[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    url, folder = setup
    assert results("hero", "--format", "csv", "--store", url, "--config",
                   str(folder / "config.toml")) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows == [list(CSV_HEADER),
                    ["hero", D1, "control", "5000", "checkout", "250", "250", "250"],
                    ["hero", D1, "control", "5000", "revenue", "1", "10", "100"],
                    ["hero", D1, "B", "5000", "checkout", "400", "400", "400"],
                    ["hero", D1, "B", "5000", "revenue", "1", "10", "100"],
                    ["hero", D2, "control", "5000", "checkout", "250", "250", "250"],
                    ["hero", D2, "control", "5000", "revenue", "0", "0", "0"],
                    ["hero", D2, "B", "5000", "checkout", "400", "400", "400"],
                    ["hero", D2, "B", "5000", "revenue", "1", "5", "125"]]


def test_since_and_until_narrow_the_days(
        setup: tuple[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    url, folder = setup
    assert results("hero", "--format", "json", "--since", D2, "--until", D2, "--store", url,
                   "--config", str(folder / "config.toml")) == 0
    (hero,) = json.loads(capsys.readouterr().out)["experiments"]
    assert hero["days"] == [D2] and hero["arms"][0]["units"] == 5000


def test_problems_exit_with_a_message(setup: tuple[str, Path],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    url, folder = setup
    config = str(folder / "config.toml")
    assert results("nope", "--store", url, "--config", config) == 2
    assert "no experiment 'nope' is defined; defined: hero, skewed" in capsys.readouterr().err
    down = f"redis://127.0.0.1:{_free_port()}"
    assert results("--store", down, "--config", config) == 1
    assert "cannot read the store" in capsys.readouterr().err
    assert results("--store", url, "--config", config, "--rules", str(folder / "none")) == 2
    assert "rules folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        results("--since", "22.11.2026")
    assert "expected a UTC day like" in capsys.readouterr().err


def test_without_a_store_url_the_embedded_data_folder_is_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A running embedded Valkey is read through its socket; with the proxy stopped, the
    command starts one on store.data_dir for as long as it reads (the data persist)."""
    data = tmp_path / "valkey"
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "experiments.toml").write_text(RULES)
    config = tmp_path / "config.toml"
    config.write_text(f'[store]\ndata_dir = "{data}"\n[rules]\nfolder = "{tmp_path / "rules"}"\n')
    assert results("--config", str(config)) == 2
    assert "pass --store URL" in capsys.readouterr().err
    with EmbeddedValkey(data) as server:  # as `kairos serve` runs it: use its socket
        record(server.url)
        assert results("hero", "--config", str(config), "--format", "csv") == 0
        assert len(capsys.readouterr().out.splitlines()) == 9
    assert results("skewed", "--config", str(config), "--format", "csv") == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    with EmbeddedValkey(data):  # the command stopped its server: the folder is free again
        pass
