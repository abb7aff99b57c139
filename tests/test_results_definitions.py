"""``kairos results`` reads experiment definitions with the proxy's own rules loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.model import Allocation
from proxy.results.definitions import load_definitions
from proxy.rules import RuleLibrary

HERO = """
[[experiment]]
id = "hero"
pages = ["/"]
start = 2026-11-01T00:00:00Z
arms = [{id = "control", weight = 0.5}, {id = "B", weight = 0.5, slot = "h1", text = "B"}]
goals = [{id = "checkout", kind = "page", url = "/done", primary = true}]
"""
BANDIT = """
[[experiment]]
id = "banner"
pages = ["/"]
allocation = "bandit"
arms = [{id = "a", weight = 0.5}, {id = "b", weight = 0.5}]
[[experiment.goals]]
id = "click"
kind = "click"
selector = ".banner a"
primary = true
"""
OPTIMISED = """
[[rule]]
id = "cta-copy"
pages = ["/"]
slot = "#cta"
optimise = true
goal = "/done"
variants = [{ id = "short", text = "Go" }, { id = "long", text = "Go now" }]
"""


def write(folder: Path, **files: str) -> Path:
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def test_reads_experiments_and_optimised_rules_and_skips_hidden_files(tmp_path: Path) -> None:
    write(tmp_path, **{"hero.toml": HERO, "banner.toml": BANDIT, "cta.toml": OPTIMISED,
                       "_draft.toml": "nonsense [", ".swap.toml": "nonsense [",
                       "notes.txt": "not toml"})
    found = load_definitions(tmp_path)
    assert sorted(found) == ["banner", "cta-copy", "hero"]
    assert found["banner"].allocation is Allocation.BANDIT
    assert found["cta-copy"].allocation is Allocation.BANDIT
    assert found["hero"].start is not None and found["hero"].start.year == 2026


def test_problems_are_reported_and_the_good_experiments_still_load(tmp_path: Path) -> None:
    problems: list[str] = []
    write(tmp_path, **{"a.toml": HERO, "b.toml": HERO,
                       "c.toml": BANDIT.replace('"banner"', '"odd"').replace("0.5}, {id",
                                                                             "0.6}, {id")})
    found = load_definitions(tmp_path, problems.append)
    assert sorted(found) == ["hero"]
    assert any("b.toml" in p and '"hero"' in p and "already used" in p for p in problems)
    assert any("c.toml" in p and "sum to 1.1" in p for p in problems)


def test_a_missing_folder_says_how_to_give_one(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"rules folder .* does not exist .*--rules"):
        load_definitions(tmp_path / "missing")


def test_reads_the_bundled_rules_folder_as_the_proxy_does() -> None:
    rules = Path(__file__).resolve().parent.parent / "rules"
    running = {d.id: d.experiment for d in RuleLibrary.load(rules, quiet=True).ruleset.experiments}
    assert load_definitions(rules) == running and "hero-headline" in running
