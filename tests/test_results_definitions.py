"""The stand-in loader of experiment definitions from the rules folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.model import Allocation
from proxy.results.definitions import load_definitions

HERO = """
[[experiment]]
id = "hero"
start = 2026-11-01T00:00:00Z
arms = [{id = "control", weight = 0.5}, {id = "B", weight = 0.5}]
goals = [{id = "checkout", kind = "page", url = "/done", primary = true}]
"""
BANDIT = """
[pages]  # tables other than [[experiment]] belong to the rules engine: ignored here
x = 1

[[experiment]]
id = "banner"
allocation = "bandit"
arms = [{id = "a", weight = 0.5}, {id = "b", weight = 0.5}]
[[experiment.goals]]
id = "click"
kind = "click"
selector = ".banner a"
primary = true
"""


def write(folder: Path, **files: str) -> Path:
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def test_reads_every_rules_file_and_skips_hidden_ones(tmp_path: Path) -> None:
    write(tmp_path, **{"hero.toml": HERO, "banner.toml": BANDIT, "_draft.toml": "nonsense [",
                       ".swap.toml": "nonsense [", "notes.txt": "not toml"})
    found = load_definitions(tmp_path)
    assert sorted(found) == ["banner", "hero"]
    assert found["banner"].allocation is Allocation.BANDIT
    assert found["hero"].start is not None and found["hero"].start.year == 2026


@pytest.mark.parametrize("files, message", [
    ({"a.toml": HERO, "b.toml": HERO}, r"b\.toml: experiment\[0\]: experiment id 'hero' is "
                                       r"already defined at .*a\.toml: experiment\[0\]"),
    ({"a.toml": "[[experiment]\n"}, r"a\.toml: not valid TOML"),
    ({"a.toml": "[experiment]\nid = 'x'\n"}, r"a\.toml: 'experiment' must be an array of "
                                             r"tables, written \[\[experiment\]\]"),
    ({"a.toml": HERO.replace("0.5}, {id", "0.6}, {id")},
     r"a\.toml: experiment\[0\]: arm weights sum to 1\.1"),
])
def test_problems_name_the_file_and_the_table(tmp_path: Path, files: dict[str, str],
                                              message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_definitions(write(tmp_path, **files))


def test_a_missing_folder_says_how_to_give_one(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"rules folder .* does not exist .*--rules"):
        load_definitions(tmp_path / "missing")
